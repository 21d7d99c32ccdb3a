"""Hub ids through a whole compile, offline, from a Hub cache each test builds in a temporary HF_HOME.

The Hub id resolves to its cache snapshot once, at planning: train.py reads that folder (never
the network), the tokenizer comes from it, and the commit sha is recorded in config.yaml, plan.json
and the manifest. The compile fetches the weights (safetensors only) before training.
"""

from __future__ import annotations

import json

import pytest
import yaml

from slmc.errors import SlmcError
from slmc.layout import LAYOUT
from slmc.load import load_config
from slmc.pipeline import compile_config

from .conftest import HUB_COMMIT, write_hub_cache
from .test_train_families import TINY_RUN, config_block

REPO = "HuggingFaceTB/SmolLM2-135M"
CHECK_NAMES = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json")


def compile_hub(tmp_path, *overrides, plan_only=False):
    return compile_config(load_config([*TINY_RUN, f"out_dir={tmp_path / 'out'}", *overrides]), plan_only=plan_only,
                          quiet=True)


def test_lora_compile_of_a_hub_id_records_its_commit_everywhere(hub_cache, family_checkpoints, tmp_path):
    """A real LoRA run of a llama (SmolLM2-shaped) checkpoint named by its Hub id, through export and package."""
    snapshot = write_hub_cache(hub_cache, REPO, family_checkpoints["smollm2-135m"])
    result = compile_hub(tmp_path, "init=pretrained", f"init.path={REPO}", "train=lora", "train.lr=0.05")
    run = result.run_dir
    assert run.name.startswith("llama-") and "-pretrained-lora-" in run.name
    planned = {"source": REPO, "folder": str(snapshot), "hub": REPO, "revision": HUB_COMMIT, "family": "llama"}
    config = yaml.safe_load((run / LAYOUT.config).read_text())
    assert config["init"]["path"] == REPO and config["provenance"]["checkpoints"]["init.path"] == planned
    assert json.loads((run / LAYOUT.plan).read_text())["provenance"]["checkpoints"]["init.path"] == planned
    block = config_block((run / LAYOUT.train_script).read_text())  # the local snapshot, as data
    assert block["INIT"] == {"kind": "pretrained", "path": str(snapshot), "hub": REPO, "revision": HUB_COMMIT}
    assert (run / LAYOUT.tokenizer).read_bytes() == (snapshot / "tokenizer.json").read_bytes()
    assert f"{REPO} at commit {HUB_COMMIT[:12]}" in result.stages["tokenizer"].source
    train = result.stages["train"]
    assert train.first_loss is not None and train.last_loss is not None

    manifest = json.loads((result.bundle / "manifest.json").read_text())
    assert manifest["model"]["architecture"] == "llama" and manifest["model"]["model_type"] == "llama"
    assert manifest["provenance"]["checkpoints"] == {"init.path": {"hub": REPO, "revision": HUB_COMMIT,
                                                                   "family": "llama"}}
    assert str(hub_cache) not in (result.bundle / "manifest.json").read_text()  # no local path ships
    assert manifest["metrics"]["parity"]["ok"]
    readme = (result.bundle / "README.md").read_text()
    assert "A llama decoder" in readme and f"Hub model {REPO} (llama) at commit {HUB_COMMIT}" in readme
    assert json.loads((result.bundle / "genai_config.json").read_text())["model"]["type"] == "llama"
    assert "| model | llama, " in (run / LAYOUT.report).read_text()


def test_planning_fetches_no_weights_and_training_fetches_the_planned_commit(hub_cache, family_checkpoints,
                                                                            tmp_path, monkeypatch):
    """Planning resolves config and tokenizer files only; the train stage fetches the weights of the
    commit the plan resolved, even when the branch has moved since."""
    import slmc.hub
    from slmc.stages.train import fetch_checkpoints

    snapshot = write_hub_cache(hub_cache, REPO, family_checkpoints["smollm2-135m"])
    fetched = []
    real = slmc.hub.fetch_weights
    monkeypatch.setattr(slmc.hub, "fetch_weights", lambda ref, *a, **k: fetched.append(ref) or real(ref, *a, **k))
    cfg = load_config([*TINY_RUN, f"out_dir={tmp_path}", "init=pretrained", f"init.path={REPO}", "train=finetune"])
    planned = compile_config(cfg, plan_only=True, quiet=True)
    assert fetched == []
    (hub_cache / "models--HuggingFaceTB--SmolLM2-135M" / "refs" / "main").write_text("f" * 40)  # main moved on
    fetch_checkpoints(cfg, planned.run_dir)
    assert [(r.repo_id, r.revision) for r in fetched] == [(REPO, HUB_COMMIT)]
    assert (snapshot / "model.safetensors").is_file()


def test_a_hub_checkpoint_without_safetensors_is_refused(hub_cache, family_checkpoints, tmp_path):
    from slmc.stages.checkpoints import fetch_weights, resolve

    write_hub_cache(hub_cache, REPO, family_checkpoints["smollm2-135m"], names=CHECK_NAMES)
    with pytest.raises(SlmcError, match="no safetensors weights") as err:
        fetch_weights(resolve("init.path", REPO))
    assert "model.safetensors" in err.value.fix


def test_a_hub_teacher_is_resolved_for_distillation(hub_cache, family_checkpoints, tmp_path):
    snapshot = write_hub_cache(hub_cache, "Qwen/Qwen3-0.6B", family_checkpoints["qwen3-0.6b"])
    result = compile_hub(tmp_path, "model=qwen2_tiny", "model.vocab_size=320", "init=distill",
                         "init.distill.teacher_path=Qwen/Qwen3-0.6B", plan_only=True)
    block = config_block((result.run_dir / LAYOUT.train_script).read_text())
    assert block["DISTILL"]["teacher_path"] == str(snapshot)
    assert block["ARCH"]["teacher"]["class"] == "Qwen3ForCausalLM" and block["ARCH"]["model"]["family"] == "qwen2"
    teacher = json.loads((result.run_dir / LAYOUT.plan).read_text())["provenance"]["checkpoints"]
    assert teacher == {"init.distill.teacher_path": {"source": "Qwen/Qwen3-0.6B", "folder": str(snapshot),
                                                     "hub": "Qwen/Qwen3-0.6B", "revision": HUB_COMMIT,
                                                     "family": "qwen3"}}
    assert str(snapshot) in result.plan.stage("tokenizer").consumes  # the snapshot, so a new commit is a new key


@pytest.mark.slow  # ~35 s: a whole prune + export compile; the Hub path itself is covered by the LoRA compile above
def test_prune_of_a_hub_id_reads_the_planned_snapshot(hub_cache, family_checkpoints, tmp_path):
    """init=prune with a Hub id: the prune stage loads the cache snapshot at the planned commit
    (weights fetched, safetensors only), never the id as a folder name."""
    snapshot = write_hub_cache(hub_cache, REPO, family_checkpoints["smollm2-135m"])
    result = compile_hub(tmp_path, "init=prune", f"init.path={REPO}", "train=none",
                         "init.prune.mlp_ratio=0.5")
    prune = result.stages["prune"]
    assert prune.source == str(snapshot)
    pruned = json.loads((result.run_dir / LAYOUT.init_checkpoint / "config.json").read_text())
    source = json.loads((snapshot / "config.json").read_text())
    assert pruned["intermediate_size"] == source["intermediate_size"] // 2
    manifest = json.loads((result.bundle / "manifest.json").read_text())
    assert manifest["provenance"]["checkpoints"]["init.path"]["revision"] == HUB_COMMIT
