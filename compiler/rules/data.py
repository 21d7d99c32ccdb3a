"""Data rules: every named path exists with the files it should hold; the tokenizer fits the model."""

from __future__ import annotations

from ..stages.records import SAVED_MARKERS
from ._engine import rule
from .context import PathFacts, deployed_arch, ensure_context

MIN_BPE_VOCAB = 256 + 3
"""A byte-level BPE needs its 256 byte tokens plus the special tokens (bos, eos, pad)."""

CHECKPOINT_KEYS = ("init.path", "init.distill.teacher_path")


def _checkpoint_missing(f: PathFacts) -> list[str]:
    missing = [] if "config.json" in f.names else ["config.json"]
    if not f.has_weights():
        missing.append("weights (*.safetensors or pytorch_model.bin)")
    return missing


def _path_problem(key: str, f: PathFacts) -> tuple[str, str] | None:
    """(message, fix) for a path that is not what the config needs, else None."""
    if not f.exists:
        return f"{key}: {f.path} does not exist", f"create it or correct {key}"
    if key in CHECKPOINT_KEYS:
        if not f.is_dir:
            return f"{key}: {f.path} is a file; a Hugging Face checkpoint folder is expected", f"point {key} at the folder"
        missing = _checkpoint_missing(f)
        if missing:
            return (
                f"{key}: {f.path} lacks {' and '.join(missing)}",
                "save the checkpoint with save_pretrained() (config.json + model.safetensors)",
            )
    elif f.is_dir and not (key.startswith("data.") and key != "data.tokenizer" and f.names & set(SAVED_MARKERS)):
        return f"{key}: {f.path} is a folder; a file is expected", f"point {key} at a file (or a save_to_disk folder)"
    return None


@rule("data.paths_exist")
def paths_exist(rule, cfg, ctx):
    """Every path the config names exists and holds what it should: data files, data.tokenizer, and checkpoints (config.json + weights) at init.path and the teacher path."""
    ctx = ensure_context(cfg, ctx)
    if cfg.data.kind == "files" and not cfg.data.train_files:
        yield rule.violation(
            ("data.train_files",), "data=files with an empty data.train_files list",
            "set data.train_files=[/path/a.txt,/path/b.jsonl]",
        )
    for key, facts in ctx.paths.items():
        problem = _path_problem(key, facts)
        if problem is None and key in ctx.problems:
            problem = (f"{key}: {ctx.problems[key]}", f"repair or replace the file named by {key}")
        if problem:
            yield rule.violation((key.split("[")[0],), *problem)


@rule("init.path_required")
def path_required(rule, cfg, ctx):
    """init=pretrained and init=prune name a checkpoint in init.path; init=distill names the teacher in init.distill.teacher_path."""
    kind = cfg.init.kind
    if kind in ("pretrained", "prune") and not cfg.init.path:
        yield rule.violation(
            ("init.path",), f"init={kind} needs a local checkpoint folder, but init.path is null",
            "set init.path=/path/to/checkpoint (a save_pretrained() folder)",
        )
    if kind == "distill" and not cfg.init.distill.teacher_path:
        yield rule.violation(
            ("init.distill.teacher_path",), "init=distill needs a teacher, but init.distill.teacher_path is null",
            "set init.distill.teacher_path=/path/to/teacher (a save_pretrained() folder)",
        )


@rule("data.vocab_matches_model")
def vocab_matches_model(rule, cfg, ctx):
    """The tokenizer's ids fit the model's embedding (vocab_size ≥ highest id + 1); a tokenizer trained locally needs vocab_size ≥ 259."""
    ctx = ensure_context(cfg, ctx)
    dep = deployed_arch(cfg, ctx)
    tok = ctx.tokenizer
    if tok is None:
        yield from _no_tokenizer(rule, cfg, ctx)
        return
    if dep.arch is None:
        return
    vocab, where = dep.arch.vocab_size, ("model.vocab_size" if dep.source == "model" else "init.path")
    tok_key = "data.tokenizer" if cfg.data.tokenizer else "init.path"
    if tok.size > vocab:
        yield rule.violation(
            (tok_key, where),
            f"tokenizer {tok.path} has ids up to {tok.size - 1} ({len(tok.vocab)} tokens) but the model's "
            f"vocab_size is {vocab} ({where}): those ids index past the embedding",
            f"set model.vocab_size={tok.size}" if where == "model.vocab_size" else "use the checkpoint's own tokenizer",
        )
    elif tok.size < vocab and dep.source == "model" and not _teacher_width(cfg, ctx, vocab):
        yield rule.violation(
            (tok_key, where),
            f"tokenizer {tok.path} has {tok.size} ids but model.vocab_size={vocab}: "
            f"{vocab - tok.size} embedding rows are never used",
            f"set model.vocab_size={tok.size} (or a multiple of 64 just above it)",
            "warning",
        )


def _teacher_width(cfg, ctx, vocab: int) -> bool:
    """A distilled student's vocab_size follows the teacher's (padded) one, not the tokenizer's."""
    return cfg.init.kind == "distill" and ctx.teacher_arch is not None and ctx.teacher_arch.vocab_size == vocab


def _no_tokenizer(rule, cfg, ctx):
    if cfg.data.tokenizer:
        return  # named but unreadable: data.paths_exist says why
    facts = ctx.paths.get("init.path")
    if cfg.init.kind in ("pretrained", "prune") and facts is not None and facts.is_dir:
        yield rule.violation(
            ("data.tokenizer", "init.path"),
            f"data.tokenizer is null and {facts.path} has no tokenizer.json: a newly trained tokenizer would not "
            "match the checkpoint's embeddings",
            f"set data.tokenizer to the checkpoint's tokenizer.json, or save it into {facts.path}",
        )
    elif cfg.init.kind in ("scratch", "distill") and cfg.model.vocab_size < MIN_BPE_VOCAB:
        yield rule.violation(
            ("model.vocab_size",),
            f"model.vocab_size={cfg.model.vocab_size} is below {MIN_BPE_VOCAB}: the tokenizer trained for it needs "
            "256 byte tokens plus bos/eos/pad",
            f"set model.vocab_size={max(MIN_BPE_VOCAB, 512)} or more",
        )


@rule("data.files_are_text")
def files_are_text(rule, cfg, ctx):
    """Each data file starts as the data stage can read it: UTF-8 text without NUL bytes, and in a .jsonl file complete JSON records holding a string data.jsonl_field, no lone surrogates (only the first 64 KiB are read here; the data stage reads the rest, before training)."""
    ctx = ensure_context(cfg, ctx)
    keys = [k for k, f in ctx.paths.items() if k.startswith(("data.train_files", "data.heldout_files")) and f.exists]
    if not keys or cfg.data.format != "text":
        return  # chat/instruction records: data.records_valid
    from ..stages.data import sample_problem, uses_records  # reads a bounded head of each file

    keys = [k for k in keys if not uses_records(ctx.paths[k].path)]  # .parquet, ...: data.records_valid

    for key in keys:
        problem = sample_problem(ctx.paths[key].path, cfg.data.jsonl_field, key)
        if problem is not None:
            yield rule.violation(((problem.where or key).split("[")[0],), problem.message, problem.fix or "")
