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


def test_every_option_of_every_group_composes(tmp_path):
    run = tmp_path / "run"  # init=from_run loads an slmc run folder's final checkpoint: it must exist
    (run / "checkpoint").mkdir(parents=True)
    for name in ("config.yaml", "plan.json", "checkpoint/config.json", "checkpoint/tokenizer.json",
                 "checkpoint/model.safetensors"):
        (run / name).touch()
    for group in ("device", "model", "init", "train", "compress", "runtime", "data"):
        for option in available_options(group):
            extra = {"pretrained": ["init.path=/ckpt"], "prune": ["init.path=/ckpt"], "from_run": [f"init.run={run}"],
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


# Typos get the nearest key or option, not Hydra's "use +key" advice (which then fails as unknown).

@pytest.mark.parametrize("override, where, suggestion", [
    ("train.max_step=20", "train.max_step", "train.max_steps=20"),
    ("trian.max_steps=3", "trian.max_steps", "train.max_steps=3"),
    ("train.lora.rr=4", "train.lora.rr", "train.lora.r=4"),
    ("devise=cpu", "devise", "device=cpu"),
    ("lr=0.1", "lr", "train.lr=0.1"),
    ("export.max_seqlen=64", "export.max_seqlen", "export.max_seq_len=64"),
])
def test_key_typos_suggest_the_nearest_key(override, where, suggestion):
    with pytest.raises(ConfigError) as err:
        load_config([override])
    assert err.value.where == where
    assert f"did you mean {suggestion}?" in err.value.fix
    assert "+" not in err.value.render() and "append" not in err.value.render()


def test_an_added_unknown_key_suggests_the_nearest_key():
    with pytest.raises(ConfigError) as err:
        load_config(["+train.max_step=1"])
    assert "train.max_step: unknown key" in err.value.message and "did you mean train.max_steps?" in err.value.message


@pytest.mark.parametrize("override, suggestions", [
    ("compress=int3", ["compress=int4", "compress=int8"]),
    ("device=jetson_orin_nan", ["device=jetson_orin_nano"]),
    ("train=lorra", ["train=lora"]),
])
def test_option_typos_suggest_the_nearest_options(override, suggestions):
    with pytest.raises(ConfigError) as err:
        load_config([override])
    assert err.value.fix.startswith("did you mean " + " or ".join(suggestions) + "?"), err.value.fix


def test_a_far_off_option_lists_every_option_without_guessing():
    with pytest.raises(ConfigError) as err:
        load_config(["compress=zzzzzz"])
    assert "did you mean" not in err.value.fix
    assert all(option in err.value.fix for option in available_options("compress"))


# device.tensorrt_version reaches build_engine.sh and the manifest: refused at check time.

@pytest.mark.parametrize("version", ["10.3; rm -rf /", "$(touch /tmp/pwned)", "10.3`id`", "10", "10.3.0.30.1",
                                     "", "10.3\n", "v10.3", "10.3 ", "１０.３"])
def test_a_tensorrt_version_that_is_not_a_version_is_refused(version):
    from slmc.compose import hydra_quote

    with pytest.raises(ConfigError) as err:
        load_config(["device=jetson_orin_nano", f"device.tensorrt_version={hydra_quote(version)}"])
    assert "device.tensorrt_version" in err.value.where and "MAJOR.MINOR" in err.value.message


@pytest.mark.parametrize("version", ["10.3", "8.6.1", "10.3.0.30"])
def test_tensorrt_versions_are_accepted(version):
    cfg = load_config(["device=jetson_orin_nano", f"device.tensorrt_version='{version}'"])
    assert cfg.device.tensorrt_version == version


# Your own option files: --config-dir, shared by check and compile.

def test_a_config_dir_adds_options_and_keeps_the_shipped_ones(tmp_path):
    from slmc.load import config_dirs

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "wide.yaml").write_text("name: wide\nhidden_size: 256\nnum_hidden_layers: 2\n"
                                                  "num_attention_heads: 4\nnum_key_value_heads: 4\n"
                                                  "intermediate_size: 512\nvocab_size: 4096\n"
                                                  "max_position_embeddings: 256\n")
    dirs = config_dirs([tmp_path])
    assert "wide" in available_options("model", dirs) and "tiny" in available_options("model", dirs)
    cfg = load_config(["model=wide", "model.rope_theta=5e5"], dirs)
    assert (cfg.model.hidden_size, cfg.model.rope_theta, cfg.model.family) == (256, 5e5, "llama")
    with pytest.raises(ConfigError):
        load_config(["model=wide"])  # not without the folder


def test_a_config_dir_file_with_a_shipped_name_is_refused(tmp_path):
    from slmc.load import config_dirs

    (tmp_path / "device").mkdir()
    (tmp_path / "device" / "cpu.yaml").write_text("name: cpu\n")
    with pytest.raises(ConfigError) as err:
        config_dirs([tmp_path])
    assert "device/cpu.yaml" in err.value.message and err.value.where == "--config-dir"


def test_a_missing_config_dir_is_named(tmp_path):
    from slmc.load import config_dirs

    with pytest.raises(ConfigError) as err:
        config_dirs([tmp_path / "nope"])
    assert "nope" in err.value.message and err.value.where == "--config-dir"
