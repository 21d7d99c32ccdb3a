"""Distillation rule: teacher and student must speak the same token ids."""

from __future__ import annotations

from pathlib import Path

from ._engine import rule
from .context import TokenizerFacts, ensure_context


def token_differences(a: TokenizerFacts, b: TokenizerFacts) -> list[tuple[str, int | None, int | None]]:
    """(token, id in a, id in b) for every token whose id differs or that only one side has."""
    out = []
    for tok in a.vocab.keys() | b.vocab.keys():
        ia, ib = a.vocab.get(tok), b.vocab.get(tok)
        if ia != ib:
            out.append((tok, ia, ib))
    return sorted(out, key=lambda t: (min(i for i in t[1:] if i is not None), t[0]))


def _examples(diff) -> str:
    shown = [f"{tok!r}: {ia if ia is not None else '-'} vs {ib if ib is not None else '-'}" for tok, ia, ib in diff[:3]]
    return "; e.g. " + ", ".join(shown) if shown else ""


@rule("distill.tokenizer_shared")
def tokenizer_shared(rule, cfg, ctx):
    """init=distill: the student uses the teacher's tokenizer and vocabulary size, so the KL term compares logits of the same tokens."""
    if cfg.init.kind != "distill":
        return
    ctx = ensure_context(cfg, ctx)
    teacher, t_tok = ctx.teacher_arch, ctx.teacher_tokenizer
    if teacher is None:
        return  # data.paths_exist names the missing teacher
    tpath = cfg.init.distill.teacher_path
    v_s, v_t = cfg.model.vocab_size, teacher.vocab_size
    if v_s != v_t:
        yield rule.violation(
            ("model.vocab_size", "init.distill.teacher_path"),
            f"student model.vocab_size={v_s} but the teacher's vocab_size is {v_t}: logits of different widths "
            "cannot be compared token by token",
            f"set model.vocab_size={v_t}",
        )
    if cfg.data.tokenizer is None:
        # The tokenizer stage gives the student the teacher's tokenizer.json when there is one.
        if t_tok is None:
            yield _untrained_student_tokenizer(rule, tpath, t_tok, v_t)
        return
    s_tok = ctx.tokenizer
    if s_tok is None:
        return  # unreadable: data.paths_exist says why
    if t_tok is None:
        yield _teacher_without_tokenizer(rule, tpath, s_tok, v_t)
        return
    diff = token_differences(s_tok, t_tok)
    if diff:
        yield rule.violation(
            ("data.tokenizer", "init.distill.teacher_path"),
            f"student tokenizer {s_tok.path} ({len(s_tok.vocab)} tokens) and teacher tokenizer {t_tok.path} "
            f"({len(t_tok.vocab)} tokens) differ on {len(diff)} token(s){_examples(diff)}",
            f"set data.tokenizer={t_tok.path}",
        )


def _untrained_student_tokenizer(rule, tpath: str, t_tok: TokenizerFacts | None, v_t: int):
    fix = f"set data.tokenizer={Path(tpath) / 'tokenizer.json'}" if t_tok else "set data.tokenizer to the teacher's tokenizer.json"
    return rule.violation(
        ("data.tokenizer", "init.distill.teacher_path"),
        "data.tokenizer is null and the teacher folder has no tokenizer.json, so the student would get a newly "
        f"trained byte-level BPE whose ids differ from the teacher's ({v_t} tokens)",
        fix,
    )


def _teacher_without_tokenizer(rule, tpath: str, s_tok: TokenizerFacts, v_t: int):
    if s_tok.size > v_t:
        return rule.violation(
            ("data.tokenizer", "init.distill.teacher_path"),
            f"the student's tokenizer has ids up to {s_tok.size - 1}, beyond the teacher's vocab_size {v_t}",
            "use the tokenizer the teacher was trained with",
        )
    return rule.violation(
        ("init.distill.teacher_path",),
        f"the teacher folder has no tokenizer.json, so slmc cannot confirm that {s_tok.path} is its tokenizer",
        f"put the teacher's tokenizer.json into {tpath}",
        "warning",
    )
