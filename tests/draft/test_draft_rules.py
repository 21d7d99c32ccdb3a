"""The draft section at check time: every rule that can be decided before the target is trained."""

from __future__ import annotations

import shutil

import pytest

from slmc.draft_config import DRAFT_RUN, draft_config, student_model
from slmc.load import load_config
from slmc.pipeline import check


def _errors(*overrides: str) -> dict[str, str]:
    violations, _ = check(load_config(list(overrides)))
    return {v.rule: v.message for v in violations if v.rule.startswith("draft.") and v.severity == "error"}


def test_the_default_draft_config_passes_every_draft_rule():
    assert _errors("draft.method=prune") == {}
    assert _errors("draft.method=distill", "draft.train_steps=50") == {}


def test_each_method_names_what_it_is_missing():
    assert "needs draft.path" in _errors("draft.method=checkpoint")["draft.method_inputs"]
    assert "draft.train_steps is 0" in _errors("draft.method=distill")["draft.method_inputs"]


def test_a_draft_no_smaller_than_the_target_is_refused():
    message = _errors("draft.method=prune", "draft.prune.layer_ratio=1.0")["draft.smaller_than_target"]
    assert "not fewer than the target's" in message
    # the tiny model has 4 layers: a 4-layer student is as large as its teacher
    assert "draft.smaller_than_target" in _errors("draft.method=distill", "draft.train_steps=5",
                                                  "draft.num_hidden_layers=4")


def test_tensorrt_bundles_carry_no_draft():
    errors = _errors("draft.method=prune", "device=jetson_orin_nano", "runtime=tensorrt", "compress=fp16")
    assert "needs runtime=ort" in errors["draft.runtime_ort"]


def test_target_and_draft_together_must_fit_the_device():
    # a device that holds the tiny target alone but not the pair
    from slmc.estimate import Arch
    from slmc.rules._facts import usable_bytes
    from slmc.rules.memory import deploy_need

    cfg = load_config(["draft.method=prune"])
    need = deploy_need(cfg, Arch.from_model(cfg.model), "fp32", cfg.export.max_seq_len, cfg.export.max_batch_size)
    memory_gb = need * 1.2 / (cfg.device.usable_memory_fraction * 1e9)
    errors = _errors("draft.method=prune", f"device.memory_gb={memory_gb}")
    assert "together they exceed" in errors["draft.fits_device"]
    assert usable_bytes(load_config([f"device.memory_gb={memory_gb}"]).device) >= need


def test_a_checkpoint_draft_must_share_the_targets_tokenizer(tmp_path, built):
    _, checkpoint = built  # the fixture bundle's Hugging Face checkpoint (no tokenizer.json in it)
    draft = shutil.copytree(checkpoint, tmp_path / "draft")
    shutil.copy(built[0] / "tokenizer.json", draft / "tokenizer.json")
    # the target trains its own tokenizer: no existing checkpoint can share it
    trained_here = _errors("draft.method=checkpoint", f"draft.path={draft}")
    assert "trains its own tokenizer" in trained_here["draft.tokenizer_shared"]
    # the target reuses a tokenizer: the draft's must be the same file
    other = tmp_path / "other.json"
    other.write_text((built[0] / "tokenizer.json").read_text().replace('"ka"', '"kb"', 1))
    differs = _errors("draft.method=checkpoint", f"draft.path={draft}", f"data.tokenizer={other}")
    assert "differs from the target's" in differs["draft.tokenizer_shared"]
    same = _errors("draft.method=checkpoint", f"draft.path={draft}", f"data.tokenizer={draft / 'tokenizer.json'}")
    assert "draft.tokenizer_shared" not in same


def test_the_draft_config_is_an_ordinary_run_config(tmp_path):
    target = load_config(["draft.method=prune", "compress=int8", "train.max_steps=7",
                          "targets.max_ppl_increase=0.1", "eval.tasks=[]", "package.version=3"])
    child = draft_config(target, tmp_path / "checkpoint")
    assert child.init.kind == "prune" and child.init.path == str((tmp_path / "checkpoint").resolve())
    assert child.init.prune.layer_ratio == 0.5
    assert child.train.kind == "none"                      # no recovery steps asked for
    assert child.compress == target.compress and child.device == target.device and child.data == target.data
    assert child.draft.method == "none" and child.run_name == DRAFT_RUN
    assert child.targets.max_ppl_increase is None and child.eval.tasks == [] and child.package.version is None
    tuned = draft_config(load_config(["draft.method=prune", "draft.train_steps=30"]), tmp_path / "checkpoint")
    assert (tuned.train.kind, tuned.train.max_steps) == ("finetune", 30)


def test_the_distilled_student_has_the_targets_width_and_vocabulary():
    cfg = load_config(["draft.method=distill", "draft.train_steps=5"])
    config = {"model_type": "qwen3", "hidden_size": 256, "num_hidden_layers": 6, "num_attention_heads": 8,
              "num_key_value_heads": 4, "intermediate_size": 512, "vocab_size": 5000,
              "max_position_embeddings": 1024, "tie_word_embeddings": True, "rope_theta": 1e6, "rms_norm_eps": 1e-6}
    model = student_model(cfg, config)
    assert (model["family"], model["num_hidden_layers"], model["hidden_size"], model["vocab_size"]) == \
        ("llama", 3, 256, 5000)
    assert student_model(load_config(["draft.method=distill", "draft.num_hidden_layers=2"]),
                         {**config, "model_type": "qwen2"})["family"] == "qwen2"


@pytest.mark.parametrize("method", ["none"])
def test_no_draft_no_stage(method):
    from slmc.pipeline import check_and_plan

    plan = check_and_plan(load_config([f"draft.method={method}"])).plan
    assert "draft" not in [s.name for s in plan.stages]
    assert "draft" in [s.name for s in check_and_plan(load_config(["draft.method=prune"])).plan.stages]
