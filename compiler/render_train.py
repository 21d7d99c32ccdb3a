"""Render train.py, a generated file (not a stage): every value its template parts place.

Which parts make the script (the recipe of the method) is decided in `recipes`.

The template only lays values out; this module decides them (precision, the
transformers config of a model built from scratch, where the weights come
from, the architecture and LoRA targets from the family registry, the run
folder's paths) so that one config always renders the same bytes. Config values
reach the script only as literals (`py` filter); the comments beside them are
the schema's own field docs, flattened to one line.

The checkpoint is the truth: with init=pretrained|prune the trained model's
architecture is the checkpoint's config.json (its family), and the `model`
group is not rendered at all. A Hub id is rendered as the local snapshot folder
the plan resolved it to, so train.py reads a folder and never the network.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from . import families
from .errors import ConfigError
from .families import Family
from .layout import LAYOUT
from .recipes import compose, recipe_of
from .schema import DistillConfig, LoraConfig, ModelConfig, QatConfig, SlmcConfig, TrainConfig
from .stages.checkpoints import ResolvedCheckpoint, named_checkpoints, resolve
from .stages.tokenizer import EOS, PAD


KEEP_CHECKPOINTS = 2
"""Resumable checkpoints kept in checkpoints/ (older ones are deleted after each save)."""

# Train options whose training variant this version of the script does not implement:
# the script still renders and compiles, and exits at start with this message. (Empty: every
# kind is implemented; kept so that a new schema kind can ship refused rather than faked.)
NOT_IMPLEMENTED: dict[str, str] = {}

QAT_FAKE_QUANT_INPUTS = True
"""train=qat also rounds each Linear's input as ORT's DynamicQuantizeLinear does at run time
(uint8, one range per sequence): without it the simulation misses most of int8's cost
(bench/results/notes.md, "QAT")."""

QAT_SNAP_FINAL_WEIGHTS = True
"""train=qat saves each weight at its fake-quantized value (on its last grid), so that the
export's quantize_dynamic reproduces the weights the training used; it helps while ranges
follow the weights and hurts with frozen ranges (bench/results/notes.md, "QAT")."""

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
    when the host lists only fp16) and fp32 on CPU. On CPU, bf16 autocast is
    faster than fp32 with AVX512-BF16 but several times slower with AVX2 only
    (bench/results/notes.md, "Training precision"), and a compile cannot see the
    training CPU: fp32 is the choice that is never a disaster.
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
    family = families.get(model.family)
    config: dict[str, Any] = {"model_type": family.model_types[0]}
    for key in _MODEL_KEYS:
        config[key] = getattr(model, key)
    config["hidden_act"] = "silu"  # SwiGLU MLP
    config["rope_parameters"] = {"rope_type": "default", "rope_theta": model.rope_theta}
    if family.qkv_bias == "attention_bias":  # a family whose biases are optional: slmc's presets have none
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


def _model_rows(cfg: SlmcConfig) -> list[tuple] | None:
    """MODEL's rows for a model built from the `model` group; None when a checkpoint is loaded."""
    if cfg.init.kind in ("pretrained", "prune"):
        return None
    config = model_config(cfg.model)
    family = families.get(cfg.model.family)
    notes = {
        "model_type": f"architecture family {family.name} ({family.causal_lm_class})",
        "hidden_act": "SwiGLU MLP activation",
        "rope_parameters": "RoPE base frequency (model.rope_theta)",
        "attention_bias": "no bias on q/k/v/o projections",
    }
    return _items(ModelConfig, config, notes)


def _train_rows(cfg: SlmcConfig) -> list[tuple]:
    """TRAIN's rows; `parallel` only in a recipe for several processes (one process has no choice)."""
    train = cfg.train
    keys = _TRAIN_KEYS if recipe_of(cfg).distributed else tuple(k for k in _TRAIN_KEYS if k != "parallel")
    values = {key: getattr(train, key) for key in keys}
    values["betas"] = list(train.betas)
    return _items(TrainConfig, values)


def lora_target_modules(family: Family | None, requested: Sequence[str]) -> str | list[str]:
    """peft's `target_modules` for the trained family: split names (q_proj, gate_proj) land on a fused
    family's qkv_proj / gate_up_proj; 'all-linear' stays peft's plain-string shortcut (a list holding it
    names a module called 'all-linear', which peft does not find).

    Names the family lacks are kept, so that peft names them if the script runs (rule
    lora.targets_exist refuses them at `slmc check`); with the family unknown (a checkpoint
    rendered without `slmc check`, whose config.json cannot be read) the names stay as given.
    """
    if family is None:
        return "all-linear" if list(requested) == ["all-linear"] else list(requested)
    targets = family.lora_targets(list(requested))
    modules = targets.peft_target_modules
    return modules if isinstance(modules, str) else modules + list(targets.unknown)


def _lora_rows(lora: LoraConfig, family: Family | None) -> list[tuple]:
    values = {
        "r": lora.r,
        "alpha": lora.alpha,
        "dropout": lora.dropout,
        "target_modules": lora_target_modules(family, lora.target_modules),
    }
    notes = {"target_modules": "train.lora.target_modules on this family's modules (q_proj/k_proj/v_proj -> qkv_proj "
                               "and gate_proj/up_proj -> gate_up_proj where they are fused); 'all-linear' as peft's "
                               "own shortcut"}
    return _items(LoraConfig, values, notes)


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


def resolved_checkpoints(cfg: SlmcConfig,
                         checkpoints: Sequence[ResolvedCheckpoint] | None = None) -> dict[str, ResolvedCheckpoint]:
    """config path -> the checkpoint as planned (`checkpoints`, from the plan), else resolved here."""
    if checkpoints is not None:
        return {c.key: c for c in checkpoints}
    return {key: resolve(key, value) for key, value in named_checkpoints(cfg).items()}


def _arch(family: Family | None) -> dict[str, Any] | None:
    """ARCH entry: the transformers class of a family and the config.json model_types it reads."""
    if family is None:
        return None
    return {"family": family.name, "class": family.causal_lm_class, "model_types": list(family.model_types)}


def trained_family(cfg: SlmcConfig, checkpoints: dict[str, ResolvedCheckpoint]) -> Family | None:
    """The family of the model train.py trains: the checkpoint's with init=pretrained|prune (pruning
    keeps the family), else the `model` group's (a model built from scratch, a distilled student)."""
    if cfg.init.kind in ("pretrained", "prune"):
        record = checkpoints.get("init.path")
        return record.spec if record is not None else None
    return families.get(cfg.model.family)


def arch_rows(cfg: SlmcConfig, checkpoints: dict[str, ResolvedCheckpoint]) -> list[tuple]:
    teacher = checkpoints.get("init.distill.teacher_path") if cfg.init.kind == "distill" else None
    return [
        ("model", _arch(trained_family(cfg, checkpoints)),
         "the model trained: loaded from INIT['path'] (its config.json) or built from MODEL"),
        ("teacher", _arch(teacher.spec if teacher is not None else None),
         "the distillation teacher (INIT['kind'] == 'distill'), loaded from DISTILL['teacher_path']"),
    ]


def init_source(cfg: SlmcConfig, checkpoints: dict[str, ResolvedCheckpoint] | None = None) -> dict[str, Any]:
    """Where the weights come from: built from MODEL, or a Hugging Face folder (absolute, or relative to
    the run folder). A Hub id becomes its snapshot folder in the Hugging Face cache."""
    init = cfg.init
    record = (checkpoints or {}).get("init.path")
    hub = {"hub": record.repo_id if record else None, "revision": record.revision if record else None}
    if init.kind == "pretrained":
        path = record.folder if record is not None else _local_path(init.path, "init.path")
        return {"kind": "pretrained", "path": path, **hub}
    if init.kind == "prune":
        # The prune stage writes the pruned model into the run folder before training.
        return {"kind": "prune", "path": LAYOUT.init_checkpoint, **hub}
    return {"kind": init.kind, "path": None, "hub": None, "revision": None}


def distill_settings(cfg: SlmcConfig, checkpoints: dict[str, ResolvedCheckpoint] | None = None) -> dict[str, Any]:
    """Teacher and loss weights; the teacher is used only when init.kind == 'distill'."""
    d = cfg.init.distill
    teacher = None
    if cfg.init.kind == "distill":
        record = (checkpoints or {}).get("init.distill.teacher_path")
        teacher = record.folder if record is not None else _local_path(d.teacher_path, "init.distill.teacher_path")
    return {"teacher_path": teacher, "temperature": d.temperature, "alpha_kl": d.alpha_kl, "alpha_ce": d.alpha_ce}


def _distill_rows(cfg: SlmcConfig, checkpoints: dict[str, ResolvedCheckpoint]) -> list[tuple]:
    notes = {"teacher_path": "the teacher's Hugging Face folder (a Hub id's snapshot in the Hugging Face cache)"}
    return _items(DistillConfig, distill_settings(cfg, checkpoints), notes)


def tracking_settings(cfg: SlmcConfig) -> dict[str, Any] | None:
    """TRACKING: the tracker and its store, a folder of the run folder (None: no tracking)."""
    kind = cfg.train.tracking
    if kind == "none":
        return None
    if kind == "tensorboard":
        return {"kind": kind, "dir": LAYOUT.tensorboard}
    return {"kind": kind, "dir": LAYOUT.mlruns, "experiment": "slmc"}


def run_paths() -> dict[str, str]:
    """Paths train.py reads and writes, relative to its own folder (the run folder)."""
    return {
        "train_tokens": LAYOUT.train_tokens,
        "heldout_tokens": LAYOUT.heldout_tokens,
        "tokenizer": LAYOUT.tokenizer,
        "checkpoints": LAYOUT.checkpoints,
        "final_checkpoint": LAYOUT.final_checkpoint,
        "metrics": LAYOUT.metrics,
    }


def train_script_context(cfg: SlmcConfig, checkpoints: Sequence[ResolvedCheckpoint] | None = None) -> dict[str, Any]:
    """Every value the train.py template places, computed from the resolved config and its checkpoints
    as planned (`checkpoints`: the plan's; resolved here when not given)."""
    precision, precision_note = resolve_precision(cfg)
    train = cfg.train
    resolved = resolved_checkpoints(cfg, checkpoints)
    family = trained_family(cfg, resolved)
    return {
        "seed": cfg.seed,
        "device": cfg.host.accelerator,
        "precision": precision,
        "precision_note": " ".join(precision_note.split()),
        "init": init_source(cfg, resolved),
        "arch": arch_rows(cfg, resolved),
        "model": _model_rows(cfg),
        "train": _train_rows(cfg),
        "lora": _lora_rows(train.lora, family),
        "qat": _qat_rows(train.qat),
        "tracking": tracking_settings(cfg),
        "distill": _distill_rows(cfg, resolved),
        "tokens": {"bos": EOS, "eos": EOS, "pad": PAD},
        "paths": run_paths(),
        "keep_checkpoints": KEEP_CHECKPOINTS,
        "not_implemented": dict(NOT_IMPLEMENTED),
        # Facts for the header docstring: closed-set names and integers only (no free text).
        "summary": {
            "train": train.kind,
            "init": cfg.init.kind,
            "family": family.name if family else None,
            "model_class": family.causal_lm_class if family else None,
            "steps": train.max_steps,
            "sequences_per_step": train.batch_size * train.grad_accum_steps,
            "seq_len": train.seq_len,
        },
    }


def render_train_script(cfg: SlmcConfig, checkpoints: Sequence[ResolvedCheckpoint] | None = None) -> str:
    """The text of the run folder's train.py (deterministic: same config and checkpoints, same bytes)."""
    return compose(recipe_of(cfg), train_script_context(cfg, checkpoints))
