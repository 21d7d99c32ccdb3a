"""The draft's own config, derived from the target's: the draft is an ordinary slmc run.

A `draft` section (schema.DraftConfig) asks for a second, smaller decoder in the bundle. Rather
than a second training path, the draft is described as the config a user would write by hand
for it — `init=prune` of the target's final checkpoint, `init=distill` with that checkpoint as
the teacher, or `init=pretrained` of a local checkpoint — and compiled by the same pipeline
(stages.draft). Everything that must match the target (data, tokenizer, device, runtime,
compression, export limits, seed) is copied from the target's config; what would make the draft
do more than a draft needs (a regression gate, task evaluation, its own draft) is turned off.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .schema import SlmcConfig

DRAFT_RUN = "draft"  # the draft's run folder inside the target's: <run>/draft/
# The shape fields a llama/qwen2 student copies from the target's config.json (ModelConfig's names).
_SHAPE = ("hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size", "vocab_size",
          "max_position_embeddings", "tie_word_embeddings", "rope_theta", "rms_norm_eps")


def student_layers(cfg: SlmcConfig, target_layers: int) -> int:
    """The distilled student's depth: draft.num_hidden_layers, else half the target's (at least 1)."""
    return cfg.draft.num_hidden_layers or max(1, target_layers // 2)


def student_model(cfg: SlmcConfig, target_config: dict[str, Any]) -> dict[str, Any]:
    """The `model` section of a distilled draft: the target's width and vocabulary, fewer layers.

    A qwen2 target gives a qwen2 student (q/k/v biases); every other family a llama student of the
    same shape, which shares the tokenizer and vocabulary, all that speculative decoding needs.
    """
    family = "qwen2" if target_config.get("model_type") == "qwen2" else "llama"
    shape = {k: target_config[k] for k in _SHAPE if target_config.get(k) is not None}
    if "num_key_value_heads" not in shape:
        shape["num_key_value_heads"] = shape["num_attention_heads"]
    layers = student_layers(cfg, int(target_config["num_hidden_layers"]))
    return {**cfg.model.model_dump(mode="json"), **shape, "name": f"draft-{layers}l", "family": family,
            "num_hidden_layers": layers}


def draft_config(cfg: SlmcConfig, target_checkpoint: Path) -> SlmcConfig:
    """The draft run's config, for a target whose final checkpoint is `target_checkpoint`."""
    method = cfg.draft.method
    if method == "none":
        raise ValueError("draft.method is none: there is no draft to configure")
    data = cfg.model_dump(mode="json")
    checkpoint = str(Path(target_checkpoint).resolve())
    steps = cfg.draft.train_steps
    train = {**data["train"], "max_steps": steps, "warmup_steps": min(data["train"]["warmup_steps"], steps // 10)}
    tuning = "finetune" if steps else "none"  # prune and checkpoint drafts: optional fine-tuning
    if method == "prune":
        data["init"] = {"name": "prune", "kind": "prune", "path": checkpoint,
                        "prune": cfg.draft.prune.model_dump(mode="json")}
        data["train"] = {**train, "name": tuning, "kind": tuning}
    elif method == "distill":
        target_config = json.loads((Path(target_checkpoint) / "config.json").read_text(encoding="utf-8"))
        data["model"] = student_model(cfg, target_config)
        data["init"] = {"name": "distill", "kind": "distill",
                        "distill": {**data["init"]["distill"], "teacher_path": checkpoint}}
        data["train"] = {**train, "name": "pretrain", "kind": "pretrain"}
    else:  # checkpoint
        data["init"] = {"name": "pretrained", "kind": "pretrained", "path": cfg.draft.path}
        data["train"] = {**train, "name": tuning, "kind": tuning}
    data.update(run_name=DRAFT_RUN, draft={"method": "none"},
                targets={}, package={}, eval={"tasks": []})
    data["data"] = {**data["data"], "tokenizer": None}  # the draft reuses its init checkpoint's (the target's)
    return SlmcConfig.model_validate(data)
