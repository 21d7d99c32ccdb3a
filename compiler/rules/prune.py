"""Pruning rules: the family can prune what init.prune asks, and what it leaves is still a valid decoder."""

from __future__ import annotations

from ..estimate import Arch, prune_arch
from ._engine import rule
from .arch import arch_problems
from .context import ensure_context

MLP_MULTIPLE = 8
"""MLP widths stay multiples of this (tensor-core and SIMD friendly)."""

AXIS_FIELDS = {"layers": "init.prune.layer_ratio", "kv_groups": "init.prune.kv_group_ratio",
               "mlp_channels": "init.prune.mlp_ratio"}
"""Pruning axis (`Family.prune_axes`) -> the init.prune field that asks for it."""


def asked_axes(p) -> dict[str, str]:
    """axis -> the config path asking to prune it (a ratio below 1, or keep_layers for layers)."""
    asked = {axis: path for axis, path in AXIS_FIELDS.items() if getattr(p, path.rsplit(".", 1)[1]) < 1}
    if p.keep_layers is not None:
        asked["layers"] = "init.prune.keep_layers"
    return asked


def refused_axes(src: Arch, p) -> list[tuple[str, str, str]]:
    """(config path, message, fix) for each axis init.prune asks that the source's family cannot prune:
    one its `prune_axes` lacks, or KV groups where its RoPE ties the head count to hidden_size.

    The stage raises the first of these too, so a config the check let through never
    reaches weights the stage cannot slice.
    """
    family, out = src.spec, []
    for axis, path in asked_axes(p).items():
        fix = "leave init.prune.keep_layers unset" if path.endswith("keep_layers") else f"set {path}=1.0"
        if axis not in family.prune_axes:
            can = ", ".join(family.prune_axes) or "nothing"
            out.append((path, f"{family.name} checkpoints cannot be pruned along {axis} ({path}); "
                              f"slmc prunes {family.name} along: {can}", fix))
        elif axis == "kv_groups" and src.rope_type in family.heads_fixed_by_rope:
            out.append((path, f"this {family.name} checkpoint's {src.rope_type} RoPE cannot lose KV groups: "
                              f"transformers checks its RoPE parameters against hidden_size / num_attention_heads "
                              f"({src.hidden_size} / {src.num_attention_heads}), which dropping heads changes",
                        f"{fix} (layers and MLP channels can still be pruned)"))
    return out


@rule("prune.family_axes")
def family_axes(rule, cfg, ctx):
    """init=prune: each axis init.prune asks to prune (layers, KV groups, MLP channels) is one the checkpoint's family can prune (its prune_axes in slmc.families; no KV groups where the family's RoPE kind fixes the head count, as Phi-3's longrope does)."""
    if cfg.init.kind != "prune":
        return
    src = ensure_context(cfg, ctx).init_arch
    if src is None:
        return  # the checkpoint rules name an unreadable or unsupported checkpoint
    for path, message, fix in refused_axes(src, cfg.init.prune):
        yield rule.violation((path, "init.path"), message, fix)


@rule("prune.keeps_full_attention", "warning")
def keeps_full_attention(rule, cfg, ctx):
    """init=prune with keep_layers on a checkpoint that mixes sliding and full attention layers (Gemma 3; Qwen2/Qwen3 with max_window_layers) keeps at least one full-attention layer."""
    if cfg.init.kind != "prune" or cfg.init.prune.keep_layers is None:
        return
    src = ensure_context(cfg, ctx).init_arch
    if src is None or src.layer_types is None:
        return
    kept = [i for i in cfg.init.prune.keep_layers if 0 <= i < src.num_hidden_layers]
    full = [i for i, t in enumerate(src.layer_types) if t == "full_attention"]
    if kept and not set(kept) & set(full):
        yield rule.violation(
            ("init.prune.keep_layers",),
            f"keep_layers {sorted(set(kept))} keeps only sliding-attention layers of this {src.family} checkpoint "
            f"(full attention in layers {full}): every kept layer attends to the last {src.sliding_window} tokens only",
            f"add one of the full-attention layers {full} to init.prune.keep_layers, or prune by "
            "init.prune.layer_ratio (it keeps each kind's share)",
        )


@rule("prune.keeps_divisibility")
def keeps_divisibility(rule, cfg, ctx):
    """init=prune: the pruned shapes (from init.path's config.json and init.prune) keep whole KV groups, heads dividing evenly, an even head_dim, an MLP width ≥ 1 (a multiple of 8 where possible) and valid keep_layers."""
    if cfg.init.kind != "prune":
        return
    ctx = ensure_context(cfg, ctx)
    src = ctx.init_arch
    if src is None:
        return  # data.paths_exist / init.path_required name the missing checkpoint
    p = cfg.init.prune
    plan = prune_arch(
        src, layer_ratio=p.layer_ratio, kv_group_ratio=p.kv_group_ratio, mlp_ratio=p.mlp_ratio,
        keep_layers=p.keep_layers, mlp_multiple=MLP_MULTIPLE,
    )
    source = f"source ({src.shapes()})"
    for problem in arch_problems(src).values():
        yield rule.violation(("init.path",), f"{problem} in the {source}", "prune a checkpoint with a valid config")
    for problem in plan.problems:
        yield rule.violation(
            ("init.prune.keep_layers",), f"{problem}", f"list unique indices in 0..{src.num_hidden_layers - 1}",
        )
    if plan.arch is None:
        return  # group_problem: the source's kv_heads_divide_heads problem, reported above
    a = plan.arch
    shapes = f"pruned: {a.shapes()} from {src.shapes()}"
    for rid, problem in arch_problems(a).items():
        if rid in arch_problems(src):
            continue  # reported for the source above
        yield rule.violation(("init.prune.kv_group_ratio", "init.path"), f"{problem}; {shapes}", "change init.prune.kv_group_ratio")
    yield from _rounding_warnings(rule, p, src, a, shapes)


def _rounding_warnings(rule, p, src, a, shapes: str):
    """Ratios that round to something other than what they ask for."""
    if p.mlp_ratio < 1 and a.intermediate_size % MLP_MULTIPLE:
        yield rule.violation(
            ("init.prune.mlp_ratio",),
            f"pruned MLP width {a.intermediate_size} is not a multiple of {MLP_MULTIPLE} (the source's "
            f"{src.intermediate_size} channels leave no multiple to round to); {shapes}",
            "keep init.prune.mlp_ratio=1.0 for this source",
            "warning",
        )
    if p.kv_group_ratio < 1 and a.num_key_value_heads == src.num_key_value_heads:
        kv = src.num_key_value_heads
        fix = (
            f"set init.prune.kv_group_ratio below {(kv - 0.5) / kv:.3g} to drop a group, or 1.0" if kv > 1
            else "set init.prune.kv_group_ratio=1.0: a single KV head (MQA) cannot be pruned"
        )
        yield rule.violation(
            ("init.prune.kv_group_ratio",),
            f"kv_group_ratio={p.kv_group_ratio:g} of {kv} KV group(s) rounds to keeping all of them, so no "
            f"heads are pruned; {shapes}",
            fix,
            "warning",
        )
