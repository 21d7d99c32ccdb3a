"""Pruning rule: the architecture structured pruning leaves is still a valid decoder."""

from __future__ import annotations

from ..estimate import prune_arch
from ._engine import rule
from .arch import arch_problems
from .context import ensure_context

MLP_MULTIPLE = 8
"""MLP widths stay multiples of this (tensor-core and SIMD friendly)."""


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
