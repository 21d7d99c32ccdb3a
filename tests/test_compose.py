"""One composition path: Hydra's Compose API, the schema's defaults underneath, a cache of Hydra's answers.

The cache is trusted only where it is compared with Hydra here: every option of
every group, random group choices with random (also odd) override values, and
every input of the key (conf files, your config folders, override order, the
schema's defaults). Results are compared as JSON text, so key order, int vs
float and bool vs int all count. The schema is the one source of defaults: the
option files hold only what an option changes, and every schema key can be set
without Hydra's '+'.
"""

from __future__ import annotations

import json
import shutil
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slmc import compose as compose_mod
from slmc import compose_cache
from slmc.compose import compose, hydra_compose
from slmc.errors import ConfigError
from slmc.load import GROUPS, available_options, conf_dir, config_dirs, load_config, validate
from slmc.schema import schema_defaults

OPTIONS = {group: available_options(group) for group in GROUPS}


def same(a, b) -> bool:
    return json.dumps(a) == json.dumps(b)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test starts with an empty cache of its own."""
    monkeypatch.setenv("SLMC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SLMC_COMPOSE_CACHE", raising=False)
    return tmp_path / "cache" / "compose"


def entries(cache) -> list:
    return sorted(cache.glob("*.json")) if cache.is_dir() else []


def no_hydra(monkeypatch):
    """From here on, composing with Hydra fails the test: answers must come from the cache."""
    def refuse(*args, **kwargs):
        raise AssertionError("Hydra was asked although the cache holds the answer")
    monkeypatch.setattr(compose_mod, "_hydra", refuse)


@pytest.mark.parametrize("override", [f"{g}={o}" for g in GROUPS for o in OPTIONS[g]] + [None])
def test_every_option_composes_through_the_cache_as_hydra_composes(override, own_cache, monkeypatch):
    overrides = [override] if override else []
    first = compose(overrides)  # a miss: Hydra, then stored
    assert len(entries(own_cache)) == 1
    truth = hydra_compose(overrides)
    no_hydra(monkeypatch)
    assert same(first, truth) and same(compose(overrides), truth)


def leaves(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += leaves(value, f"{prefix}{key}.")
        else:
            out.append(prefix + key)
    return out


SCHEMA_LEAVES = leaves(schema_defaults())
VALUES = st.one_of(
    st.integers(-10**6, 10**20).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr).filter(lambda t: "inf" not in t),
    st.sampled_from(["0.5", ".5", "1.", "1e-3", "3.0E+2", "-0", "+7", "true", "false", "null", "cpu", "1_000",
                     "/tmp/ckpt-1.5/x", "a.b", "e5", "infinity", "nan", "inf", "x..y", "_", "nullx", "True_",
                     "'quoted, with comma'", "[1,2]", "[]", "{a: 1}", "'\\${not.interpolated}'", "???"]),
    st.from_regex(r"[a-z_/][a-z0-9_./-]{0,12}", fullmatch=True),
)


@st.composite
def override_sets(draw) -> list[str]:
    groups = draw(st.dictionaries(st.sampled_from(GROUPS), st.just(None), max_size=4))
    chosen = [f"{g}={draw(st.sampled_from(OPTIONS[g]))}" for g in groups]
    keys = draw(st.lists(st.sampled_from(SCHEMA_LEAVES), unique=True, max_size=4))
    return chosen + [f"{key}={draw(VALUES)}" for key in keys]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(override_sets())
def test_random_override_sets_compose_through_the_cache_as_hydra_composes(overrides):
    try:
        truth = hydra_compose(overrides)
    except Exception as exc:  # noqa: BLE001 - whatever Hydra raises, the cached path raises the same
        with pytest.raises(type(exc)):
            compose(overrides)
        return
    assert same(compose(overrides), truth), overrides  # a miss: Hydra's answer, stored if cacheable
    if compose_cache.load(compose_cache.key(overrides, ())) is not None:
        with mock.patch.object(compose_mod, "_hydra", side_effect=AssertionError("not from the cache")):
            assert same(compose(overrides), truth), overrides
    else:  # only answers that depend on more than the key are not stored
        assert any("${" in o or o.split("=", 1)[1] == "???" for o in overrides), overrides


def test_load_config_is_the_same_from_the_cache_and_from_hydra(monkeypatch):
    overrides = ["device=jetson_orin_nano", "compress=int8", "train.max_steps=50", "train.lr=1e-3",
                 "init=pretrained", "init.path=/ckpt", "run_name=r1"]
    fresh = load_config(overrides)
    truth = validate(hydra_compose(overrides))
    no_hydra(monkeypatch)
    assert load_config(overrides) == fresh == truth


def test_errors_are_not_cached(own_cache):
    for _ in range(2):
        with pytest.raises(ConfigError):
            load_config(["train.max_stepz=3"])
    assert entries(own_cache) == []


def test_environment_interpolations_are_resolved_every_time(own_cache, monkeypatch):
    monkeypatch.setenv("SLMC_TEST_HOST", "first")
    assert compose(["host.name=${oc.env:SLMC_TEST_HOST}"])["host"]["name"] == "first"
    monkeypatch.setenv("SLMC_TEST_HOST", "second")
    assert compose(["host.name=${oc.env:SLMC_TEST_HOST}"])["host"]["name"] == "second"
    assert entries(own_cache) == []


def test_overrides_of_hydras_own_settings_are_not_cached(own_cache):
    compose(["hydra.job.name=x"])
    assert compose_cache.key(["hydra.job.name=x"], ()) is None and entries(own_cache) == []


def test_the_key_holds_every_input(tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    (mine / "device").mkdir(parents=True)
    board = mine / "device" / "board.yaml"
    board.write_text("name: board\n")
    base = compose_cache.key(["train.lr=0.1", "train.max_steps=3"], [mine])
    assert base == compose_cache.key(["train.lr=0.1", "train.max_steps=3"], [mine])
    assert base != compose_cache.key(["train.max_steps=3", "train.lr=0.1"], [mine])  # order matters to Hydra
    assert base != compose_cache.key(["train.lr=0.1", "train.max_steps=3"], [])
    board.write_text("name: board2\n")
    changed_file = compose_cache.key(["train.lr=0.1", "train.max_steps=3"], [mine])
    (mine / "model").mkdir()
    (mine / "model" / "new.yaml").write_text("name: new\n")
    added_file = compose_cache.key(["train.lr=0.1", "train.max_steps=3"], [mine])
    assert len({base, changed_file, added_file}) == 3
    import slmc.schema

    changed = {**schema_defaults(), "seed": 1}
    monkeypatch.setattr(slmc.schema, "schema_defaults", lambda: changed)
    assert compose_cache.key(["train.lr=0.1", "train.max_steps=3"], [mine]) != added_file


def test_a_changed_conf_tree_is_composed_again(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    shutil.copytree(conf_dir(), conf, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(compose_mod, "conf_dir", lambda: conf)
    assert compose([])["model"]["hidden_size"] == 128
    (conf / "model" / "tiny.yaml").write_text((conf / "model" / "tiny.yaml").read_text()
                                              .replace("hidden_size: 128", "hidden_size: 96"))
    assert compose([])["model"]["hidden_size"] == 96


def test_broken_or_foreign_entries_are_ignored(own_cache):
    truth = compose([])
    (entry,) = entries(own_cache)
    for text in ("{not json", json.dumps({"format": "other", "config": {"seed": 7}}), json.dumps([1])):
        entry.write_text(text)
        assert same(compose([]), truth)


def test_an_unwritable_cache_costs_speed_only(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would go")
    monkeypatch.setenv("SLMC_CACHE_DIR", str(blocked))
    assert same(compose(["train.max_steps=4"]), hydra_compose(["train.max_steps=4"]))


def test_the_cache_can_be_turned_off(own_cache, monkeypatch):
    monkeypatch.setenv("SLMC_COMPOSE_CACHE", "0")
    compose([])
    assert entries(own_cache) == []


def test_the_cache_stays_bounded(own_cache, monkeypatch):
    monkeypatch.setattr(compose_cache, "MAX_ENTRIES", 4)
    for steps in range(7):
        compose([f"train.max_steps={steps}"])
    assert len(entries(own_cache)) <= 4


# The schema is the one source of defaults.

def test_option_files_hold_only_what_the_option_changes():
    """No value in an option file repeats the schema's default (it would be a second place to change)."""
    import yaml

    defaults = schema_defaults()
    repeated = []

    def walk(data, base, where):
        for key, value in data.items():
            default = base.get(key, "???")
            if isinstance(value, dict) and isinstance(default, dict):
                walk(value, default, f"{where}.{key}")
            elif default != "???" and same(value, default):
                repeated.append(f"{where}.{key}: {value!r}")

    for group in GROUPS:
        for path in sorted((conf_dir() / group).glob("*.yaml")):
            walk(yaml.safe_load(path.read_text()) or {}, defaults[group], f"{group}/{path.stem}")
    assert not repeated, repeated
    assert not (conf_dir() / "_base").exists()


@pytest.mark.parametrize("override", [f"{g}={o}" for g in GROUPS for o in OPTIONS[g]])
def test_every_schema_key_exists_in_every_composed_option(override):
    """So every key can be set with key=value (no '+'), and unset ones are the schema's defaults."""
    composed = compose([override])
    assert set(leaves(schema_defaults())) <= set(leaves(composed))
    group, option = override.split("=")
    for key, default in schema_defaults()[group].items():
        if default != "???" and not isinstance(default, dict):
            shipped = (conf_dir() / group / f"{option}.yaml").read_text()
            if f"\n{key}:" not in f"\n{shipped}":
                assert same(composed[group][key], default), (override, key)


def test_a_required_field_an_option_forgets_is_named(tmp_path):
    (tmp_path / "device").mkdir()
    (tmp_path / "device" / "half_board.yaml").write_text("name: half_board\nkind: cpu\n")
    with pytest.raises(ConfigError) as err:
        load_config(["device=half_board"], config_dirs([tmp_path]))
    assert err.value.where.startswith("device.") and "required" in err.value.message


@pytest.mark.parametrize("name", ["my conf", "it's, odd", "back\\slash", "ends with \\"])
def test_config_folders_with_odd_names_reach_hydra_intact(tmp_path, name):
    folder = tmp_path / name
    (folder / "device").mkdir(parents=True)
    (folder / "device" / "odd_board.yaml").write_text(
        (conf_dir() / "device" / "cpu.yaml").read_text().replace("name: cpu", "name: odd_board"))
    assert load_config(["device=odd_board"], config_dirs([folder])).device.name == "odd_board"


def test_a_file_changed_while_hydra_reads_it_is_not_stored(tmp_path, monkeypatch, own_cache):
    conf = tmp_path / "conf"
    shutil.copytree(conf_dir(), conf, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(compose_mod, "conf_dir", lambda: conf)
    real = compose_mod._hydra

    def edit_during(overrides, dirs):
        answer = real(overrides, dirs)
        (conf / "model" / "tiny.yaml").write_text((conf / "model" / "tiny.yaml").read_text() + "\n# edited\n")
        return answer

    monkeypatch.setattr(compose_mod, "_hydra", edit_during)
    compose([])
    assert entries(own_cache) == []
