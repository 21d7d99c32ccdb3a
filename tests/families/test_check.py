"""`slmc check` with a checkpoint of each family: the right family, unsupported ones and broken files at check."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from slmc.cli import main
from slmc.load import load_config, run_name
from slmc.rules._engine import run_rules

from .conftest import FAMILY_OF, PUBLISHED, slmc_env

SUPPORTED = "llama, qwen2, qwen3, gemma3 (gemma3_text), phi3, mistral"


def check_json(capsys, *overrides):
    rc = main(["check", "--json", *overrides])
    return rc, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_each_family_passes_check_and_is_named(name, family_checkpoints, capsys):
    rc = main(["check", "init=pretrained", f"init.path={family_checkpoints[name]}", "train=none"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"(checkpoint: {FAMILY_OF[name]}-" in out
    rc, payload = check_json(capsys, "init=pretrained", f"init.path={family_checkpoints[name]}", "train=none")
    assert rc == 0 and payload["ok"] and payload["architecture"].startswith(FAMILY_OF[name] + "-")
    cfg = load_config(["init=pretrained", f"init.path={family_checkpoints[name]}", "train=none"])
    assert run_name(cfg).startswith(f"{FAMILY_OF[name]}-")  # not the unused model group's "tiny"


@pytest.mark.parametrize("name,why", [("olmoe", "mixture of experts"), ("gpt2", "GPT-2")])
@pytest.mark.parametrize("init", ["pretrained", "prune"])
def test_unsupported_architectures_exit_2_at_check_naming_the_supported_families(
        name, why, init, unsupported_checkpoints, capsys):
    rc, payload = check_json(capsys, f"init={init}", f"init.path={unsupported_checkpoints[name]}", "train=finetune")
    assert rc == 2
    errors = [v for v in payload["violations"] if v["severity"] == "error"]
    assert [v["rule"] for v in errors] == ["checkpoint.architecture_supported"]  # one reason, no field noise
    (v,) = errors
    assert why in v["message"] and SUPPORTED in v["message"] and v["paths"] == ["init.path"]
    assert str(unsupported_checkpoints[name] / "config.json") in v["message"]


def test_unsupported_teacher_is_refused_too(unsupported_checkpoints, capsys):
    rc, payload = check_json(capsys, "init=distill", f"init.distill.teacher_path={unsupported_checkpoints['olmoe']}")
    assert rc == 2
    assert {(v["rule"], v["paths"][0]) for v in payload["violations"] if v["severity"] == "error"} >= {
        ("checkpoint.architecture_supported", "init.distill.teacher_path")}


def _edit_config(folder, **changes):
    path = folder / "config.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is ...:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))
    return path


BAD_CONFIGS = {
    "negative layers": (dict(num_hidden_layers=-1), "num_hidden_layers=-1 is outside the range"),
    "fractional width": (dict(hidden_size=128.5), "hidden_size must be a whole number, got 128.5"),
    "absurd vocab": (dict(vocab_size=10 ** 12), "vocab_size=1000000000000 is outside the range"),
    "bool as count": (dict(num_attention_heads=True), "num_attention_heads must be a whole number"),
    "zero eps": (dict(rms_norm_eps=0), "rms_norm_eps=0 must be a positive number at most 0.1"),
    "string flag": (dict(tie_word_embeddings="yes"), "tie_word_embeddings must be true or false"),
    "eos outside vocab": (dict(eos_token_id=[257, 5000]), "eos_token_id=[257, 5000] is not a token id"),
    "missing width": (dict(hidden_size=...), "has no hidden_size"),
    "layer_types length": (dict(layer_types=["full_attention"]), "layer_types has 1 entries for num_hidden_layers=2"),
    "rope factor": (dict(rope_parameters={"rope_type": "linear", "factor": -2.0, "rope_theta": 1e4}),
                    "RoPE factor=-2.0 must be a positive number"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_values_exit_2_naming_the_file_and_field(case, checkpoint_copy, capsys):
    folder = checkpoint_copy()
    path = _edit_config(folder, **BAD_CONFIGS[case][0])
    rc, payload = check_json(capsys, "init=pretrained", f"init.path={folder}", "train=none")
    assert rc == 2
    messages = [v["message"] for v in payload["violations"] if v["rule"] == "checkpoint.config_valid"]
    assert any(str(path) in m and BAD_CONFIGS[case][1] in m for m in messages), messages


def test_nan_eps_says_the_checkpoint_config_is_broken_not_lower_lr(checkpoint_copy, capsys):
    folder = checkpoint_copy()
    path = folder / "config.json"
    path.write_text(path.read_text().replace('"rms_norm_eps": 1e-05', '"rms_norm_eps": NaN'))
    rc, payload = check_json(capsys, "init=pretrained", f"init.path={folder}", "train=finetune")
    assert rc == 2
    (v,) = [v for v in payload["violations"] if v["rule"] == "checkpoint.config_valid"]
    assert "rms_norm_eps is nan" in v["message"] and "config is broken" in v["message"]
    assert str(path) in v["fix"] and "lr" not in v["fix"]


def test_deeply_nested_config_is_an_error_not_a_recursion_traceback(checkpoint_copy):
    folder = checkpoint_copy()
    (folder / "config.json").write_text('{"model_type": "llama", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    proc = subprocess.run([sys.executable, "-m", "slmc.cli", "check", "init=pretrained", f"init.path={folder}"],
                          capture_output=True, text=True, env=slmc_env(), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "RecursionError" not in proc.stdout + proc.stderr
    assert f"{folder / 'config.json'} is nested deeper than 64 levels" in proc.stdout


def test_remote_code_with_a_custom_model_type_is_refused(checkpoint_copy, capsys):
    folder = checkpoint_copy()
    _edit_config(folder, model_type="my_llama", auto_map={"AutoModelForCausalLM": "modeling_my.MyForCausalLM"})
    rc, payload = check_json(capsys, "init=pretrained", f"init.path={folder}", "train=none")
    assert rc == 2
    (v,) = [v for v in payload["violations"] if v["severity"] == "error"]
    assert v["rule"] == "checkpoint.no_remote_code" and "never runs checkpoint code" in v["message"]
    assert "'my_llama'" in v["message"] and SUPPORTED in v["message"]


def test_unknown_model_type_and_unsupported_rope_kind(checkpoint_copy, capsys):
    folder = checkpoint_copy()
    _edit_config(folder, model_type="llama4_text")
    rc, payload = check_json(capsys, "init=pretrained", f"init.path={folder}", "train=none")
    assert rc == 2 and "'llama4_text' is not a supported architecture" in payload["violations"][0]["message"]
    folder = checkpoint_copy("phi-3-mini-4k")
    _edit_config(folder, rope_parameters={"rope_type": "llama3", "factor": 8.0, "rope_theta": 1e4})
    rc, payload = check_json(capsys, "init=pretrained", f"init.path={folder}", "train=none")
    (v,) = [v for v in payload["violations"] if v["severity"] == "error"]
    assert rc == 2 and v["rule"] == "checkpoint.architecture_supported" and "'llama3' is not one phi3" in v["message"]


def test_truncated_and_fake_safetensors_are_named(checkpoint_copy, capsys):
    folder = checkpoint_copy()
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    rc, payload = check_json(capsys, "init=pretrained", f"init.path={folder}", "train=none")
    (v,) = [v for v in payload["violations"] if v["severity"] == "error"]
    assert rc == 2 and v["rule"] == "checkpoint.weights_safetensors"
    assert f"{weights} is truncated: its tensors end at byte {len(data)}" in v["message"]
    weights.write_bytes((2 ** 40).to_bytes(8, "little") + b"{}")
    rc, payload = check_json(capsys, "init=pretrained", f"init.path={folder}", "train=none")
    assert rc == 2 and "beyond the format's limit" in payload["violations"][0]["message"]
    weights.write_bytes(data[:4])
    rc, payload = check_json(capsys, "init=pretrained", f"init.path={folder}", "train=none")
    assert rc == 2 and "fewer than the 8-byte header length" in payload["violations"][0]["message"]


def test_a_fifo_named_like_weights_is_refused_without_hanging(checkpoint_copy, capsys):
    folder = checkpoint_copy()
    (folder / "model.safetensors").unlink()
    os.mkfifo(folder / "model.safetensors")
    rc, payload = check_json(capsys, "init=pretrained", f"init.path={folder}", "train=none")
    assert rc == 2 and "is not a regular file" in payload["violations"][0]["message"]


def test_pickle_weights_are_refused_with_a_conversion(checkpoint_copy, capsys):
    folder = checkpoint_copy()
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    rc, payload = check_json(capsys, "init=pretrained", f"init.path={folder}", "train=none")
    (v,) = [v for v in payload["violations"] if v["severity"] == "error"]
    assert rc == 2 and v["rule"] == "checkpoint.weights_safetensors"
    assert "only pickle weights (pytorch_model.bin)" in v["message"] and "save_pretrained" in v["fix"]


def test_sharded_index_naming_a_missing_shard(checkpoint_copy, capsys):
    folder = checkpoint_copy()
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    rc, payload = check_json(capsys, "init=pretrained", f"init.path={folder}", "train=none")
    assert rc == 2 and "model-00002-of-00002.safetensors, which the checkpoint lacks" in payload["violations"][0]["message"]


def test_broken_tokenizer_json_is_named(checkpoint_copy, capsys):
    folder = checkpoint_copy()
    (folder / "tokenizer_config.json").write_text("[" * 70 + "]" * 70)
    (folder / "generation_config.json").write_text("{")
    rc, payload = check_json(capsys, "init=pretrained", f"init.path={folder}", "train=none")
    got = {v["message"] for v in payload["violations"] if v["rule"] == "checkpoint.tokenizer_files_valid"}
    assert rc == 2 and got == {f"{folder / 'tokenizer_config.json'} is nested deeper than 64 levels",
                               f"{folder / 'generation_config.json'} is not valid JSON (Expecting property name "
                               "enclosed in double quotes at line 1 column 2)"}


def test_model_overrides_that_disagree_with_the_checkpoint(family_checkpoints):
    path = family_checkpoints["qwen2.5-0.5b"]
    cfg = load_config(["init=pretrained", f"init.path={path}", "model.hidden_size=512", "model.vocab_size=320"])
    (v,) = run_rules(cfg, only=["checkpoint.model_group_unused"])
    assert v.severity == "error" and v.paths == ("model.hidden_size", "init.path")
    assert "model.hidden_size=512 (checkpoint: 112)" in v.message and "checkpoint's config.json wins" in v.fix
    (v,) = run_rules(load_config(["init=prune", f"init.path={path}", "model=small"]),
                     only=["checkpoint.model_group_unused"])
    assert v.severity == "warning" and "model=small is not used with init=prune" in v.message
    assert run_rules(load_config(["init=pretrained", f"init.path={path}"]), only=["checkpoint.model_group_unused"]) == []
    assert run_rules(load_config(["model.hidden_size=512"]), only=["checkpoint.model_group_unused"]) == []


def test_length_dependent_rope_cannot_be_exported_past_its_original_context(family_checkpoints, capsys):
    path = family_checkpoints["phi-4-mini"]
    rc, payload = check_json(capsys, "init=pretrained", f"init.path={path}", "train=none", "export.max_seq_len=8192",
                             "generation.max_new_tokens=64")
    errors = [v for v in payload["violations"] if v["severity"] == "error"]
    assert rc == 2 and [v["rule"] for v in errors] == ["checkpoint.rope_exportable"]
    assert errors[0]["fix"] == "set export.max_seq_len=4096"


def test_check_of_a_local_checkpoint_stays_cold(family_checkpoints):
    """No torch, transformers, numpy or huggingface_hub on the check path for a local folder."""
    code = ("import sys\nfrom slmc.cli import main\nrc = main(sys.argv[1:])\nheavy = ('torch', 'transformers', "
            "'numpy', 'huggingface_hub', 'safetensors', 'rich', 'hydra')\n"
            "print('IMPORTED', sorted({n.split('.')[0] for n in sys.modules} & set(heavy)))\nsys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "check", "init=pretrained",
                           f"init.path={family_checkpoints['gemma-3-1b']}", "train=none"],
                          capture_output=True, text=True, env=slmc_env(), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "IMPORTED []" in proc.stdout, proc.stdout



def test_a_broken_tokenizer_json_is_named_by_data_paths_exist(checkpoint_copy, capsys):
    folder = checkpoint_copy()
    (folder / "tokenizer.json").write_text('{"model": ' + "[" * 200 + "]" * 200 + "}")
    rc, payload = check_json(capsys, "init=pretrained", f"init.path={folder}", "train=none")
    (v,) = [v for v in payload["violations"] if v["rule"] == "data.paths_exist"]
    assert rc == 2 and f"{folder / 'tokenizer.json'} is nested deeper than 64 levels" in v["message"]
