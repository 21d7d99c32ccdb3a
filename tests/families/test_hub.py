"""Hub ids in init.path, offline, against a Hub cache each test builds in a temporary HF_HOME."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from slmc.checkpoint import effective_model_name, local_checkpoint
from slmc.cli import main
from slmc.hub import HubError, HubRef, fetch_check_files, fetch_weights, parse_hub_id
from slmc.load import load_config
from slmc.rules.context import CheckContext

from .conftest import HUB_COMMIT, slmc_env, write_hub_cache

REPO = "HuggingFaceTB/SmolLM2-135M"
CHECK_NAMES = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json")


def test_hub_ids_and_local_paths_are_told_apart(tmp_path, monkeypatch):
    assert parse_hub_id(REPO) == HubRef(REPO)
    assert parse_hub_id("Qwen/Qwen3-0.6B@" + HUB_COMMIT) == HubRef("Qwen/Qwen3-0.6B", HUB_COMMIT)
    assert parse_hub_id("Qwen/Qwen3-0.6B@refs/pr/1") == HubRef("Qwen/Qwen3-0.6B", "refs/pr/1")
    for local in ("/models/base", "./a/b", "~/a/b", "base", "a/b/c", "../a/b", "a/../b"):
        assert parse_hub_id(local) is None, local
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert parse_hub_id("org/name") is None  # an existing local folder wins


def test_check_resolves_a_cached_hub_id_offline(hub_cache, family_checkpoints, capsys):
    write_hub_cache(hub_cache, REPO, family_checkpoints["smollm2-135m"], names=CHECK_NAMES + ("model.safetensors",))
    for source in (REPO, f"{REPO}@{HUB_COMMIT}", f"{REPO}@main"):
        assert main(["check", "--json", "init=pretrained", f"init.path={source}", "train=none"]) == 0
        payload = json.loads(capsys.readouterr().out)
        assert payload["ok"] and payload["architecture"].startswith("llama-"), payload
    cfg = load_config(["init=pretrained", f"init.path={REPO}", "train=none"])
    facts = CheckContext.from_config(cfg).checkpoints["init.path"]
    assert facts.revision == HUB_COMMIT and facts.family.name == "llama" and not facts.findings
    assert facts.folder == hub_cache / "models--HuggingFaceTB--SmolLM2-135M" / "snapshots" / HUB_COMMIT
    assert effective_model_name(cfg).startswith("llama-")


def test_check_fetches_no_weights_and_the_compile_side_does(hub_cache, family_checkpoints):
    """With the repo listing cached (what an online check leaves), check passes on listed weights;
    fetch_weights returns the snapshot with model.safetensors and the commit sha."""
    snapshot = write_hub_cache(hub_cache, REPO, family_checkpoints["smollm2-135m"], listing=True)
    got = fetch_check_files(HubRef(REPO))
    assert got.commit == HUB_COMMIT and got.folder == snapshot and "model.safetensors" in got.files
    weights = fetch_weights(HubRef(REPO))
    assert weights.commit == HUB_COMMIT and (weights.folder / "model.safetensors").is_file()
    local = local_checkpoint(f"{REPO}@main")
    assert (local.folder, local.revision) == (snapshot, HUB_COMMIT)
    folder = family_checkpoints["qwen3-0.6b"]
    assert local_checkpoint(str(folder)).folder == folder and local_checkpoint(str(folder)).revision is None


def test_weights_missing_from_the_cache_while_offline(hub_cache, family_checkpoints, capsys):
    write_hub_cache(hub_cache, REPO, family_checkpoints["smollm2-135m"], names=CHECK_NAMES)
    assert main(["check", "--json", "init=pretrained", f"init.path={REPO}", "train=none"]) == 2
    (v,) = json.loads(capsys.readouterr().out)["violations"]
    assert v["rule"] == "checkpoint.weights_safetensors" and "HF_HUB_OFFLINE is set" in v["message"]
    assert f"hf download {REPO} --revision {HUB_COMMIT}" in v["fix"]
    with pytest.raises(HubError, match="no safetensors weights"):
        fetch_weights(HubRef(REPO))


@pytest.mark.parametrize("source,message,fix", [
    ("Qwen/Qwen3-0.6B", "is not in the Hub cache", "hf download Qwen/Qwen3-0.6B"),
    (f"{REPO}@v9.9", "is not in the Hub cache", f"hf download {REPO} --revision v9.9"),
])
def test_hub_ids_that_do_not_resolve_exit_2_with_a_fix(hub_cache, family_checkpoints, capsys, source, message, fix):
    write_hub_cache(hub_cache, REPO, family_checkpoints["smollm2-135m"])
    assert main(["check", "--json", "init=pretrained", f"init.path={source}", "train=none"]) == 2
    (v,) = json.loads(capsys.readouterr().out)["violations"]
    assert v["rule"] == "init.hub_resolves" and v["paths"] == ["init.path"]
    assert message in v["message"] and "HF_HUB_OFFLINE is set" in v["message"] and fix in v["fix"]


def test_unsupported_hub_model_is_refused_at_check(hub_cache, unsupported_checkpoints, capsys):
    write_hub_cache(hub_cache, "allenai/OLMoE-1B-7B-0924", unsupported_checkpoints["olmoe"])
    assert main(["check", "--json", "init=pretrained", "init.path=allenai/OLMoE-1B-7B-0924", "train=none"]) == 2
    (v,) = json.loads(capsys.readouterr().out)["violations"]
    assert v["rule"] == "checkpoint.architecture_supported" and "mixture of experts" in v["message"]


def test_teacher_from_the_hub(hub_cache, family_checkpoints, capsys):
    write_hub_cache(hub_cache, "Qwen/Qwen2.5-0.5B", family_checkpoints["qwen2.5-0.5b"])
    rc = main(["check", "--json", "init=distill", "init.distill.teacher_path=Qwen/Qwen2.5-0.5B", "model.vocab_size=320"])
    payload = json.loads(capsys.readouterr().out)
    assert rc == 0, payload
    ctx = CheckContext.from_config(load_config(["init=distill", "init.distill.teacher_path=Qwen/Qwen2.5-0.5B"]))
    assert ctx.teacher_arch.family == "qwen2" and ctx.teacher_tokenizer.size == 259


def test_real_environment_hf_home_and_offline_flag(tmp_path, family_checkpoints):
    """The user's flow: HF_HOME and HF_HUB_OFFLINE in the environment of a fresh `slmc check` process."""
    home = tmp_path / "hf"
    write_hub_cache(home / "hub", REPO, family_checkpoints["smollm2-135m"])
    proc = subprocess.run([sys.executable, "-m", "slmc.cli", "check", "init=pretrained", f"init.path={REPO}",
                           "train=none"], capture_output=True, text=True, timeout=120,
                          env=slmc_env(HF_HOME=str(home), HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "slmc check (checkpoint: llama-" in proc.stdout
