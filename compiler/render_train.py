"""Render train.py, a generated file (not a stage): every value `templates/train.py.j2` places.

The template only lays values out; this module decides them (precision, the
transformers config of a model built from scratch, where the weights come
from, the run folder's paths) so that one config always renders the same
bytes. Config values reach the script only as literals (`py` filter); the
comments beside them are the schema's own field docs, flattened to one line.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import ConfigError
from .layout import LAYOUT
from .render import render_template
from .schema import DistillConfig, LoraConfig, ModelConfig, QatConfig, SlmcConfig, TrainConfig
from .stages.tokenizer import EOS, PAD

TEMPLATE = "train.py.j2"

KEEP_CHECKPOINTS = 2
"""Resumable checkpoints kept in checkpoints/ (older ones are deleted after each save)."""

# Train options whose training variant this version of the script does not implement:
# the script still renders and compiles, and exits at start with this message. (Empty: every
# kind is implemented; kept so that a new schema kind can ship refused rather than faked.)
NOT_IMPLEMENTED: dict[str, str] = {}

QAT_FAKE_QUANT_INPUTS = True
"""train=qat also rounds each Linear's input as ORT's DynamicQuantizeLinear does at run time
(uint8, one range per sequence). Without it the simulation misses most of int8's cost:
measured on model=tiny (a fine-tuned checkpoint, 8192 held-out tokens), deployed int8
perplexity 132.079 (fp32 131.986); the script's fake quantization gives 132.077 with inputs
(the same to 2e-5), 132.019 weights only."""

QAT_SNAP_FINAL_WEIGHTS = True
"""train=qat saves each weight at its fake-quantized value (on its last grid), so that the
export's quantize_dynamic reproduces the weights the training used. Measured on model=tiny
(same QAT run saved both ways, deployed int8 perplexity): with ranges following the weights,
snapped 132.047 vs unsnapped 132.080; with ranges frozen after 10 of 100 steps, snapped
132.181 vs unsnapped 132.062 (weights that drifted past a frozen range are clamped)."""

# Keys of ModelConfig that are transformers config arguments under the same name.
_MODEL_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "max_position_embeddings", "tie_word_embeddings", "rms_norm_eps",
    "initializer_range",
)

_TRAIN_KEYS = (
    "kind", "max_steps", "batch_size", "seq_len", "grad_accum_steps", "lr", "min_lr_ratio",
    "warmup_steps", "weight_decay", "betas", "grad_clip", "eval_every", "eval_batches",
    "save_every", "log_every", "parallel",
)


def resolve_precision(cfg: SlmcConfig) -> tuple[str, str]:
    """The autocast precision train.py uses, and one line saying why.

    `auto` picks bf16 on CUDA (no loss scaling needed; fp16 with a GradScaler
    when the host lists only fp16) and fp32 on CPU. On CPU, bf16 autocast was
    measured 1.3x (1.3M model) to 2.5x (36M) faster than fp32 on a CPU with
    AVX512-BF16, but 8.5x slower when only AVX2 is available, and a compile
    cannot see the training CPU: fp32 is the choice that is never a disaster.
    """
    train, host = cfg.train, cfg.host
    if train.precision != "auto":
        return train.precision, f"train.precision={train.precision}"
    if host.accelerator == "cuda":
        for choice in ("bf16", "fp16"):
            if choice in host.precisions:
                return choice, f"train.precision=auto -> {choice}: the fastest autocast host.precisions lists for cuda"
        return "fp32", "train.precision=auto -> fp32: host.precisions lists no half precision"
    return "fp32", "train.precision=auto -> fp32 on cpu (bf16 pays only with AVX512-BF16/AMX: set 'bf16' there)"


def model_config(model: ModelConfig) -> dict[str, Any]:
    """transformers config arguments (AutoConfig.for_model) of the model built from scratch.

    Token ids (bos/eos/pad) are absent on purpose: train.py reads them from
    tokenizer.json at run time, so the model always agrees with the tokenizer.
    """
    config: dict[str, Any] = {"model_type": model.family}
    for key in _MODEL_KEYS:
        config[key] = getattr(model, key)
    config["hidden_act"] = "silu"  # SwiGLU MLP
    config["rope_parameters"] = {"rope_type": "default", "rope_theta": model.rope_theta}
    if model.family == "llama":
        config["attention_bias"] = False
    return config


def _doc(section: type, key: str) -> str:
    """The schema's docstring of a field, on one line (it becomes a comment in the script)."""
    field = section.model_fields.get(key)
    text = (field.description if field is not None else None) or ""
    return " ".join(text.split())


def _items(section: type, values: dict[str, Any], notes: dict[str, str] | None = None) -> list[tuple]:
    """(key, value, one-line comment) rows for a CONFIG dict literal."""
    notes = notes or {}
    rows = []
    for key, value in values.items():
        note = notes.get(key) or _doc(section, key)
        rows.append((key, value, " ".join(note.split())))
    return rows


def _model_rows(cfg: SlmcConfig) -> list[tuple]:
    config = model_config(cfg.model)
    notes = {
        "model_type": "architecture family: llama (LlamaForCausalLM) or qwen2 (Qwen2ForCausalLM)",
        "hidden_act": "SwiGLU MLP activation",
        "rope_parameters": "RoPE base frequency (model.rope_theta)",
        "attention_bias": "no bias on q/k/v/o projections",
    }
    return _items(ModelConfig, config, notes)


def _train_rows(cfg: SlmcConfig) -> list[tuple]:
    train = cfg.train
    values = {key: getattr(train, key) for key in _TRAIN_KEYS}
    values["betas"] = list(train.betas)
    return _items(TrainConfig, values)


def _lora_rows(lora: LoraConfig) -> list[tuple]:
    values = {
        "r": lora.r,
        "alpha": lora.alpha,
        "dropout": lora.dropout,
        "target_modules": list(lora.target_modules),
    }
    return _items(LoraConfig, values)


def _qat_rows(qat: QatConfig) -> list[tuple]:
    """The QAT dict: the schema's settings and this version's fixed choices (edit them in train.py)."""
    values = {
        "target": qat.target,
        "observer_steps": qat.observer_steps,
        "fake_quant_inputs": QAT_FAKE_QUANT_INPUTS,
        "snap_final_weights": QAT_SNAP_FINAL_WEIGHTS,
    }
    notes = {
        "observer_steps": "optimizer steps during which the weight ranges (int8 scales) follow the weights, "
                          "then freeze (0: the starting weights' ranges; >= max_steps: always follow, as the "
                          "exporter measures the final weights)",
        "fake_quant_inputs": "also round each Linear's input as ONNX Runtime's DynamicQuantizeLinear does "
                             "(uint8, asymmetric, one range per sequence)",
        "snap_final_weights": "save each weight on the grid training last rounded it to, so the export's "
                              "int8 quantization reproduces the weights training used (else: the float weights)",
    }
    return _items(QatConfig, values, notes)


def _local_path(path: str | None, where: str) -> str:
    """An absolute local path (as the user meant it when compiling) for a checkpoint folder."""
    if not path:
        raise ConfigError("a local checkpoint folder is required here", where=where,
                          fix=f"set {where}=/path/to/hf_checkpoint")
    return os.path.abspath(os.path.expanduser(path))


def init_source(cfg: SlmcConfig) -> dict[str, Any]:
    """Where the weights come from: built from MODEL, or a Hugging Face folder (absolute, or relative to the run folder)."""
    init = cfg.init
    if init.kind == "pretrained":
        return {"kind": "pretrained", "path": _local_path(init.path, "init.path")}
    if init.kind == "prune":
        # The prune stage writes the pruned model into the run folder before training.
        return {"kind": "prune", "path": LAYOUT.init_checkpoint}
    return {"kind": init.kind, "path": None}


def distill_settings(cfg: SlmcConfig) -> dict[str, Any]:
    """Teacher and loss weights; the teacher is used only when init.kind == 'distill'."""
    d = cfg.init.distill
    teacher = _local_path(d.teacher_path, "init.distill.teacher_path") if cfg.init.kind == "distill" else None
    return {"teacher_path": teacher, "temperature": d.temperature, "alpha_kl": d.alpha_kl, "alpha_ce": d.alpha_ce}


def _distill_rows(cfg: SlmcConfig) -> list[tuple]:
    return _items(DistillConfig, distill_settings(cfg))


def run_paths() -> dict[str, str]:
    """Paths train.py reads and writes, relative to its own folder (the run folder)."""
    return {
        "train_text": LAYOUT.train_text,
        "heldout_text": LAYOUT.heldout_text,
        "tokenizer": LAYOUT.tokenizer,
        "checkpoints": LAYOUT.checkpoints,
        "final_checkpoint": LAYOUT.final_checkpoint,
        "metrics": LAYOUT.metrics,
    }


def train_script_context(cfg: SlmcConfig) -> dict[str, Any]:
    """Every value the train.py template places, computed from the resolved config."""
    precision, precision_note = resolve_precision(cfg)
    train = cfg.train
    return {
        "seed": cfg.seed,
        "device": cfg.host.accelerator,
        "precision": precision,
        "precision_note": " ".join(precision_note.split()),
        "init": init_source(cfg),
        "model": _model_rows(cfg),
        "train": _train_rows(cfg),
        "lora": _lora_rows(train.lora),
        "qat": _qat_rows(train.qat),
        "distill": _distill_rows(cfg),
        "tokens": {"bos": EOS, "eos": EOS, "pad": PAD},
        "paths": run_paths(),
        "keep_checkpoints": KEEP_CHECKPOINTS,
        "not_implemented": dict(NOT_IMPLEMENTED),
        # Facts for the header docstring: closed-set names and integers only (no free text).
        "summary": {
            "train": train.kind,
            "init": cfg.init.kind,
            "steps": train.max_steps,
            "sequences_per_step": train.batch_size * train.grad_accum_steps,
            "seq_len": train.seq_len,
        },
    }


def render_train_script(cfg: SlmcConfig) -> str:
    """The text of the run folder's train.py (deterministic: same config, same bytes)."""
    return render_template(TEMPLATE, train_script_context(cfg))
