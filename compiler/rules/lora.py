"""LoRA rules: adapters attach to real modules, sit on a float base, and are merged before export."""

from __future__ import annotations

from ._engine import rule
from .context import ensure_context

@rule("lora.merged_before_export")
def merged_before_export(rule, cfg, ctx):
    """train=lora merges the adapters into the base before export: a bundle holds plain merged weights, no adapter graph."""
    if cfg.train.kind == "lora" and not cfg.train.lora.merge_before_export:
        yield rule.violation(
            ("train.lora.merge_before_export",),
            "train.lora.merge_before_export=false, but the ONNX bundle needs the adapters merged into the base "
            "weights (it has no LoRA branches)",
            "set train.lora.merge_before_export=true",
        )


def _bits(qc) -> int | None:
    if not isinstance(qc, dict):
        return None
    if qc.get("bits"):
        return qc["bits"]
    return 4 if qc.get("load_in_4bit") else 8 if qc.get("load_in_8bit") else None


@rule("lora.base_not_quantized_for_merge")
def base_not_quantized_for_merge(rule, cfg, ctx):
    """train=lora needs a float base to merge into: an init checkpoint with a quantization_config cannot be merged exactly."""
    if cfg.train.kind != "lora":
        return
    ctx = ensure_context(cfg, ctx)
    qc = (ctx.init_config or {}).get("quantization_config")
    if not qc:
        return
    method = qc.get("quant_method", "?") if isinstance(qc, dict) else "?"
    bits = _bits(qc)
    yield rule.violation(
        ("init.path", "train.kind"),
        f"the base checkpoint {cfg.init.path} is quantized (quantization_config: quant_method={method}"
        f"{f', {bits}-bit' if bits else ''}); merging LoRA deltas into quantized weights rounds them away",
        "start from the float (unquantized) checkpoint and let compress= quantize after the merge, or use train=finetune",
    )


@rule("lora.targets_exist")
def targets_exist(rule, cfg, ctx):
    """train.lora.target_modules name linear modules of the deployed family's decoder (or 'all-linear'): an unknown name would attach nothing. Split names (q_proj, gate_proj) land on a fused family's qkv_proj / gate_up_proj, with a warning where that adapts more than was named."""
    if cfg.train.kind != "lora":
        return
    family = _family(cfg, ctx)
    if family is None:
        return  # the checkpoint rules say why its architecture is unknown
    targets = cfg.train.lora.target_modules
    resolved = family.lora_targets(targets)
    if resolved.unknown or not targets:
        yield rule.violation(
            ("train.lora.target_modules",),
            f"unknown LoRA target module(s) {list(resolved.unknown)} for a {family.name} decoder" if targets
            else "train.lora.target_modules is empty",
            f"choose from {', '.join(family.linear_modules)} (or all-linear)",
        )
    for asked, fused in resolved.widened:
        yield rule.violation(
            ("train.lora.target_modules",),
            f"{family.name} fuses its projections: {asked} is part of {fused}, so the adapter on {fused} also "
            f"trains its other parts",
            f"name all of {fused}'s parts, or use {fused} directly, to make that explicit",
            "warning",
        )


def _family(cfg, ctx):
    """The family of the model LoRA trains: the checkpoint's with init=pretrained|prune, else the model group's."""
    from ..families import get

    if cfg.init.kind in ("pretrained", "prune"):
        arch = ensure_context(cfg, ctx).init_arch
        return arch.spec if arch is not None else None
    return get(cfg.model.family)
