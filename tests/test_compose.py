"""The Hydra-free compose path gives exactly what Hydra gives, or steps aside.

`compose_simple` is trusted only where it is compared with Hydra here: every
option of every group, random group choices with random scalar overrides, the
override value grammar against Hydra's own parser, and the YAML loader against
OmegaConf's. Results are compared as JSON text, so key order, int vs float and
bool vs int all count.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slmc.compose import _Unsupported, compose_simple, parse_value, read_yaml
from slmc.load import GROUPS, available_options, conf_dir, hydra_compose, load_config

CONF = conf_dir()
OPTIONS = {group: available_options(group) for group in GROUPS}


def same(a, b) -> bool:
    return json.dumps(a) == json.dumps(b)


def scalar_leaves(cfg: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in cfg.items():
        if isinstance(value, dict):
            out += scalar_leaves(value, f"{prefix}{key}.")
        elif not isinstance(value, list):
            out.append(prefix + key)
    return out


@pytest.mark.parametrize("override", [f"{g}={o}" for g in GROUPS for o in OPTIONS[g]] + [None])
def test_every_option_composes_as_hydra_composes(override):
    overrides = [override] if override else []
    fast = compose_simple(CONF, overrides)
    assert fast is not None, "the shipped tree must take the fast path"
    assert same(fast, hydra_compose(overrides))


VALUES = st.one_of(
    st.integers(-10**6, 10**20).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr).filter(lambda t: "inf" not in t),
    st.sampled_from(["0.5", ".5", "1.", "1e-3", "3.0E+2", "-0", "+7", "true", "false", "null", "cpu",
                     "/tmp/ckpt-1.5/x", "a.b", "e5", "infinity", "x..y", "_", "nullx", "True_"]),
    st.from_regex(r"[a-z_/][a-z0-9_./-]{0,12}", fullmatch=True),
)


@st.composite
def override_sets(draw) -> list[str]:
    groups = draw(st.dictionaries(st.sampled_from(GROUPS), st.just(None), max_size=4))
    chosen = [f"{g}={draw(st.sampled_from(OPTIONS[g]))}" for g in groups]
    leaves = scalar_leaves(compose_simple(CONF, chosen))
    keys = draw(st.lists(st.sampled_from(leaves), unique=True, max_size=5))
    return chosen + [f"{key}={draw(VALUES)}" for key in keys]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(override_sets())
def test_random_override_sets_compose_as_hydra_composes(overrides):
    fast = compose_simple(CONF, overrides)
    assert fast is not None or any(_steps_aside(o) for o in overrides), overrides
    if fast is not None:
        assert same(fast, hydra_compose(overrides)), overrides


def _steps_aside(override: str) -> bool:
    try:
        parse_value(override.split("=", 1)[1])
    except _Unsupported:
        return True
    return False


@pytest.mark.parametrize("overrides", [
    ["+model.extra=1"], ["++train.lr=0.1"], ["~train.lr"], ["train.lr=${train.max_steps}"],
    ["data.train_files=[a.txt]"], ["compress=none,int8"], ["hydra.run.dir=x"], ["train.nope=1"],
    ["device=nope"], ["device=cpu", "device=gpu_server"], ["train.lr=1", "train.lr=2"], ["train.lora=3"],
    ["train.lr='0.1'"], ["train.lr= 0.1"], ["train.lr=NULL"], ["train.lr=Inf"], ["_base=train"],
    ["hydra/launcher=local_parallel"], ["device=../model/tiny"], ["train.betas.0=0.8"], ["seed=0x10"],
    ["init.path=a b"], ["init.path=a\\,b"], ["train"], ["device@x=cpu"],
])
def test_outside_the_subset_hydra_composes(overrides):
    assert compose_simple(CONF, overrides) is None


def test_load_config_gives_the_same_config_either_way():
    overrides = ["device=jetson_orin_nano", "compress=int8", "train.max_steps=50", "train.lr=1e-3",
                 "init=pretrained", "init.path=/ckpt", "run_name=r1"]
    assert compose_simple(CONF, overrides) is not None
    from slmc.load import validate

    assert load_config(overrides) == validate(hydra_compose(overrides))


HYDRA_TEXT = st.one_of(
    st.text(alphabet="0123456789._-+eEinfaNTrulsxX/ $[]{},'\"=:\\()*@%?|", max_size=9),
    st.from_regex(r"[-+]?[0-9_]{0,3}\.?[0-9_]{0,3}([eE][-+]?[0-9]{0,3})?", fullmatch=True),
    st.from_regex(r"[A-Za-z_/.][A-Za-z0-9_./-]{0,6}", fullmatch=True),
)


@pytest.fixture(scope="module")
def hydra_parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


@settings(max_examples=400, deadline=None)
@given(HYDRA_TEXT)
def test_value_grammar_agrees_with_hydras_parser(hydra_parser, text):
    try:
        ours = parse_value(text)
    except _Unsupported:
        return
    theirs = hydra_parser.parse_override(f"k={text}").value()
    assert type(ours) is type(theirs), (text, ours, theirs)
    assert ours == theirs or (isinstance(ours, float) and math.isnan(ours) and math.isnan(theirs)), text


@pytest.mark.parametrize("text", ["1", "-0", "+5", "1.", ".5", "1e5", "1E-3", "1e400", "true", "false", "null",
                                  "abc", "a.b", "/x/y", "a-b", "e5", "infinity", "x..y", "abc.5", "null.x", "_"])
def test_value_grammar_on_known_values(hydra_parser, text):
    assert json.dumps(parse_value(text)) == json.dumps(hydra_parser.parse_override(f"k={text}").value())


def test_yaml_reads_as_omegaconf_reads_it(tmp_path):
    from omegaconf import OmegaConf

    tricky = tmp_path / "tricky.yaml"
    tricky.write_text("a: 1e-3\nb: 3.0e-3\nc: 2001-12-14\nd: .inf\ne: 1_000\nf: 0x10\ng: 012\nh: yes\n"
                      "i: ~\nj: 1:30\nk: -.5e+2\nl: [1, 2.5, x]\nm: {n: null}\no: '1e3'\np: 1.5e3\n")
    files = [tricky, *CONF.rglob("*.yaml")]
    compared = 0
    for path in files:
        try:
            ours = read_yaml(path)
        except _Unsupported:
            assert "@package" in path.read_text()  # Hydra header directives go to Hydra
            continue
        theirs = OmegaConf.to_container(OmegaConf.load(path))
        assert same(ours, theirs), path
        compared += 1
    assert compared >= 25


@pytest.mark.parametrize("path, text", [
    ("config.yaml", "defaults:\n  - device: cpu\nseed: 0\n"),                       # no _self_: Hydra's implicit order
    ("device/cpu.yaml", "# @package _global_\nname: cpu\n"),                        # header directive
    ("model/tiny.yaml", "name: tiny\nhidden_size: ???\n"),                          # required value
    ("model/tiny.yaml", "name: tiny\nvocab_size: ${model.hidden_size}\n"),          # interpolation
    ("model/tiny.yaml", "name: tiny\nname: again\n"),                               # duplicate key
    ("train/pretrain.yaml", "defaults:\n  - /_base/train@train\n  - _self_\nname: pretrain\n"),  # other package
    ("train/pretrain.yaml", "defaults:\n  - optional /_base/train@_here_\n  - _self_\n"),
    ("model/tiny.yaml", "name: tiny\n1: one\n"),                                    # non-string key
    ("model/tiny.yaml", "- a list\n"),
])
def test_files_outside_the_subset_go_to_hydra(tmp_path, path, text):
    import shutil

    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    assert compose_simple(conf, []) is not None
    (conf / path).write_text(text)
    assert compose_simple(conf, []) is None
