"""Shape rules: sequence lengths within the model's context, TensorRT profiles covering real use."""

from __future__ import annotations

from ._engine import rule
from .context import ensure_context

PROMPT_ROOM_MIN = 16
"""Fewest prompt tokens the generation defaults should leave room for before it is worth a warning."""


@rule("shape.seq_within_context")
def seq_within_context(rule, cfg, ctx):
    """export.max_seq_len and train.seq_len fit the model's context (the checkpoint's for pretrained/prune; the teacher's too when distilling)."""
    ctx = ensure_context(cfg, ctx)
    if cfg.init.kind in ("pretrained", "prune"):  # pruning keeps the source's positions
        if ctx.init_arch is None:
            return  # data.paths_exist / init.path_required name the checkpoint
        context, source = ctx.init_arch.max_position_embeddings, "init.path"
    else:
        context, source = cfg.model.max_position_embeddings, "model.max_position_embeddings"
    fixable = source.startswith("model.")
    for path, n in _lengths(cfg):
        if n > context:
            fix = f"set {path}={context}"
            if fixable:
                fix += f", or model.max_position_embeddings={n}"
            yield rule.violation(
                (path, source), f"{path}={n} exceeds the model's context of {context} tokens ({source})", fix,
            )
    teacher = ctx.teacher_arch if cfg.init.kind == "distill" else None
    if teacher is not None and _trains(cfg) and cfg.train.seq_len > teacher.max_position_embeddings:
        t = teacher.max_position_embeddings
        yield rule.violation(
            ("train.seq_len", "init.distill.teacher_path"),
            f"train.seq_len={cfg.train.seq_len} exceeds the teacher's context of {t} tokens",
            f"set train.seq_len={t}",
        )


def _trains(cfg) -> bool:
    return cfg.train.kind != "none" and cfg.train.max_steps > 0


def _lengths(cfg):
    yield "export.max_seq_len", cfg.export.max_seq_len
    if _trains(cfg):
        yield "train.seq_len", cfg.train.seq_len


@rule("shape.profile_covers_runtime")
def profile_covers_runtime(rule, cfg, ctx):
    """Shapes the bundle serves are consistent: the TensorRT profile's opt ≤ max sequence, and generation.max_new_tokens leaves room for a prompt within export.max_seq_len."""
    seq, new = cfg.export.max_seq_len, cfg.generation.max_new_tokens
    opt = cfg.runtime.opt_seq_len
    if cfg.runtime.name == "tensorrt" and opt is not None and opt > seq:
        yield rule.violation(
            ("runtime.opt_seq_len", "export.max_seq_len"),
            f"TensorRT profile opt_seq_len={opt} is above its max, export.max_seq_len={seq} (min ≤ opt ≤ max)",
            f"set runtime.opt_seq_len={max(1, seq // 2)} (or leave it null for half of max_seq_len)",
        )
    if new >= seq:
        yield rule.violation(
            ("generation.max_new_tokens", "export.max_seq_len"),
            f"generation.max_new_tokens={new} leaves no room for a prompt within export.max_seq_len={seq} "
            "(prompt + new tokens must fit the KV cache and the TensorRT profile)",
            f"set generation.max_new_tokens={max(1, seq // 2)} or export.max_seq_len={new + 2 * PROMPT_ROOM_MIN}",
        )
    elif seq - new < PROMPT_ROOM_MIN:
        yield rule.violation(
            ("generation.max_new_tokens", "export.max_seq_len"),
            f"with generation.max_new_tokens={new} and export.max_seq_len={seq} a prompt may have only "
            f"{seq - new} tokens before generation is cut short",
            f"set generation.max_new_tokens={max(1, seq - 4 * PROMPT_ROOM_MIN)} or export.max_seq_len={new + 4 * PROMPT_ROOM_MIN}",
            "warning",
        )
