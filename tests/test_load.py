"""Loading: Hydra compose + typed schema; every error names its config path."""

import pytest

from slmc.errors import ConfigError
from slmc.load import available_options, config_hash, load_config, run_name


def test_defaults_compose_to_the_documented_choices():
    cfg = load_config([])
    assert (cfg.device.name, cfg.model.name, cfg.init.kind, cfg.train.kind) == ("cpu", "tiny", "scratch", "pretrain")
    assert cfg.compress.precision == "fp32" and cfg.runtime.name == "ort" and cfg.data.kind == "builtin"


def test_config_is_frozen():
    cfg = load_config([])
    with pytest.raises(Exception):
        cfg.train.max_steps = 3  # type: ignore[misc]


def test_unknown_group_option_lists_the_available_ones():
    with pytest.raises(ConfigError) as err:
        load_config(["device=jetson_nano_typo"])
    text = err.value.render()
    assert "device/jetson_nano_typo" in text
    for option in available_options("device"):
        assert option in text


@pytest.mark.parametrize("override, path", [
    ("train.max_stepz=5", "train.max_stepz"),
    ("+model.hidden_sise=64", "model.hidden_sise"),
])
def test_unknown_keys_are_errors_with_full_path(override, path):
    with pytest.raises(ConfigError) as err:
        load_config([override])
    assert path in err.value.render()


@pytest.mark.parametrize("override, path", [
    ("train.max_steps=abc", "train.max_steps"),
    ("model.hidden_size=-1", "model.hidden_size"),
    ("compress.precision=int3", "compress.precision"),
    ("export.max_batch_size=0", "export.max_batch_size"),
    ("train.precision=fp64", "train.precision"),
])
def test_wrong_types_and_closed_sets_name_the_path(override, path):
    with pytest.raises(ConfigError) as err:
        load_config([override])
    assert path in err.value.render()


def test_all_schema_errors_are_reported_together():
    with pytest.raises(ConfigError) as err:
        load_config(["model.hidden_size=-1", "train.lr=-2", "export.opset=3"])
    text = err.value.render()
    assert all(p in text for p in ("model.hidden_size", "train.lr", "export.opset"))


def test_every_option_of_every_group_composes():
    for group in ("device", "model", "init", "train", "compress", "runtime", "data"):
        for option in available_options(group):
            extra = {"pretrained": ["init.path=/ckpt"], "prune": ["init.path=/ckpt"],
                     "distill": ["init.distill.teacher_path=/t"], "files": ["data.train_files=[a.txt]"]}
            cfg = load_config([f"{group}={option}", *extra.get(option, [])])
            assert getattr(cfg, group).name == option


def test_run_name_is_deterministic_and_changes_with_the_config():
    a, b = load_config([]), load_config([])
    assert run_name(a) == run_name(b) and config_hash(a) == config_hash(b)
    assert run_name(load_config(["train.max_steps=7"])) != run_name(a)


@pytest.mark.parametrize("bad", ["../escape", "/abs/path", "a/b", ".hidden", "x..y"])
def test_run_names_that_escape_the_output_folder_are_refused(bad):
    with pytest.raises(ConfigError) as err:
        run_name(load_config([f"run_name='{bad}'"]))
    assert "run_name" in err.value.render()
