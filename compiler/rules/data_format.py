"""Data-format rules, from a sample of the data (the first SAMPLE_RECORDS records of each file):
fields and roles, the chat template and its tokens, lengths against the model, epochs."""

from __future__ import annotations

import os
from pathlib import Path

from ._engine import rule
from .context import deployed_arch, ensure_context

SAMPLE_RECORDS = 64
"""Records read per data file at check time: enough to catch a wrong field name, quick on any corpus."""
MANY_EPOCHS = 10
"""More passes over the data than this is a warning: the model memorises a small set."""
CHARS_PER_TOKEN = 3.5
"""A rough characters-per-token of byte-level BPE on English and code, for the epoch estimate."""


def _data_keys(cfg):
    keys = [(f"data.train_files[{i}]", p) for i, p in enumerate(cfg.data.train_files)] if cfg.data.kind == "files" else []
    return keys + [(f"data.heldout_files[{i}]", p) for i, p in enumerate(cfg.data.heldout_files)]


def _sampled(cfg, key: str, raw: str):
    """(records, error) of one file's sample; records are (name, record); error a ConfigError or None."""
    from ..errors import SlmcError
    from ..stages.records import records

    out = []
    try:
        for item in records(raw, key, cfg.data.split, limit=SAMPLE_RECORDS, local_only=True):
            out.append(item)
    except SlmcError as exc:
        return out, exc
    return out, None


def _record_files(cfg, ctx):
    """The data files read as records (all of them for chat/instruction; the non-.txt/.jsonl ones for text)."""
    from ..stages.data import uses_records

    for key, raw in _data_keys(cfg):
        facts = ctx.paths.get(key)
        if facts is not None and not facts.exists:
            continue  # data.paths_exist says why
        if cfg.data.format != "text" or uses_records(raw):
            yield key, raw


@rule("data.records_valid")
def records_valid(rule, cfg, ctx):
    """The first records of each data file hold what data.format needs: a string data.jsonl_field (text), data.prompt_field and data.response_field (instruction), or data.messages_field with roles system/user/assistant and an assistant turn (chat); the message names the file and record."""
    from ..chat import to_messages
    from ..errors import SlmcError

    ctx = ensure_context(cfg, ctx)
    for key, raw in _record_files(cfg, ctx):
        sample, error = _sampled(cfg, key, raw)
        if error is not None:
            yield rule.violation(((error.where or key).split("[")[0],), error.message, error.fix or "")
            continue
        for name, record in sample:
            try:
                if cfg.data.format == "text":
                    if not isinstance(record.get(cfg.data.jsonl_field), str):
                        yield rule.violation(("data.jsonl_field",), f"{name}: no string field {cfg.data.jsonl_field!r}",
                                             f"set data.jsonl_field to the key that holds the text (keys: {sorted(record)[:8]})")
                        break
                else:
                    to_messages(record, name, cfg.data)
            except SlmcError as exc:
                yield rule.violation((exc.where or key,), exc.message, exc.fix or "")
                break


@rule("data.chat_template_available")
def chat_template_available(rule, cfg, ctx):
    """data.format=chat/instruction has a chat template (data.chat_template names one of the catalogue, or the checkpoint's tokenizer_config.json holds one), and its special tokens are in the reused tokenizer or can be added to the one trained here."""
    if cfg.data.format == "text":
        return
    from ..chat import CATALOGUE
    from ..stages.tokenizer import source_chat_template, tokenizer_source

    ctx = ensure_context(cfg, ctx)
    setting = cfg.data.chat_template
    if setting != "auto" and setting not in CATALOGUE:
        yield rule.violation(("data.chat_template",), f"no chat template named {setting!r}",
                             f"set data.chat_template=auto or one of {', '.join(CATALOGUE)}")
        return
    try:
        source = tokenizer_source(cfg)
    except Exception:  # an unresolvable checkpoint: the checkpoint rules say why
        return
    if source is None:
        return  # a tokenizer trained here: the template's tokens are added as special tokens
    if setting == "auto":
        if source_chat_template(source[0]) is None:
            yield rule.violation(("data.chat_template", source[1]),
                                 f"data.format={cfg.data.format} needs a chat template, and {source[0]} has none "
                                 "(no chat_template in its tokenizer_config.json)",
                                 f"name one: data.chat_template={'|'.join(CATALOGUE)} (its tokens must be in the tokenizer)")
        return
    if ctx.tokenizer is None:
        return
    missing = [t for t in CATALOGUE[setting][1] if t not in ctx.tokenizer.vocab]
    if missing:
        yield rule.violation(("data.chat_template", source[1]),
                             f"the {setting} template writes {', '.join(missing)}, which the tokenizer at {ctx.tokenizer.path} "
                             "lacks; tokens cannot be added to a reused tokenizer (the checkpoint has no embedding for them)",
                             "data.chat_template=auto (the checkpoint's own), or a template whose tokens it holds")


@rule("data.max_length_fits")
def max_length_fits(rule, cfg, ctx):
    """chat/instruction: data.max_length fits a row (≤ train.seq_len + 1) and the model's context (max_position_embeddings)."""
    if cfg.data.format == "text" or cfg.data.max_length is None:
        return
    n, row = cfg.data.max_length, cfg.train.seq_len + 1
    if n > row:
        yield rule.violation(("data.max_length", "train.seq_len"),
                             f"data.max_length={n} is longer than a training row of train.seq_len + 1 = {row} tokens",
                             f"set data.max_length={row} or less, or raise train.seq_len")
    ctx = ensure_context(cfg, ctx)
    arch = deployed_arch(cfg, ctx).arch
    if arch is not None and n > arch.max_position_embeddings:
        yield rule.violation(("data.max_length",), f"data.max_length={n} exceeds the model's context "
                             f"(max_position_embeddings={arch.max_position_embeddings})",
                             f"set data.max_length={arch.max_position_embeddings} or less")


@rule("data.export_serves_examples", "warning")
def export_serves_examples(rule, cfg, ctx):
    """chat/instruction: export.max_seq_len is at least the example length trained on (data.max_length, else train.seq_len), so the bundle serves conversations as long as those it learned from."""
    if cfg.data.format == "text":
        return
    n = cfg.data.max_length or cfg.train.seq_len
    if cfg.export.max_seq_len < n:
        yield rule.violation(("export.max_seq_len", "data.max_length"),
                             f"the bundle serves {cfg.export.max_seq_len} tokens (export.max_seq_len) but examples of up to "
                             f"{n} tokens are trained on: longer conversations cannot be continued on the device",
                             f"set export.max_seq_len={n} or more")


@rule("data.epochs", "warning")
def epochs(rule, cfg, ctx):
    """train.max_steps x the global batch reads the training data fewer than 10 times (estimated from the file sizes, the records counted and a sample of them); many more passes memorise a small set."""
    if cfg.data.kind != "files" or cfg.train.kind == "none":
        return
    ctx = ensure_context(cfg, ctx)
    total = 0.0
    for i, raw in enumerate(cfg.data.train_files):
        size = _estimated_chars(cfg, f"data.train_files[{i}]", raw)
        if size is None:
            return  # a size we cannot tell cheaply (Hub id, csv, json): no estimate
        total += size
    tokens = total / CHARS_PER_TOKEN
    read = cfg.train.max_steps * cfg.train.batch_size * cfg.train.grad_accum_steps * cfg.train.seq_len
    if tokens > 0 and read / tokens > MANY_EPOCHS:
        yield rule.violation(("train.max_steps", "data.train_files"),
                             f"train.max_steps={cfg.train.max_steps} reads ~{read:,} tokens, about {read / tokens:.0f} passes "
                             f"over ~{tokens:,.0f} tokens of training data (estimated from {total:,.0f} characters)",
                             f"lower train.max_steps to ~{int(cfg.train.max_steps * MANY_EPOCHS * tokens / read)} or give more data")


def _estimated_chars(cfg, key: str, raw: str) -> float | None:
    """Characters of text in one data file: .txt by size; records as count x the sample's mean."""
    path = Path(raw).expanduser()
    if path.suffix.lower() == ".txt" and path.is_file():
        return float(os.path.getsize(path))
    count = _record_count(path)
    if count is None:
        return None
    sample, error = _sampled(cfg, key, raw)
    if error is not None or not sample:
        return None
    if cfg.data.format == "text":
        chars = [len(r.get(cfg.data.jsonl_field) or "") for _, r in sample]
    else:
        from ..chat import to_messages
        from ..errors import SlmcError

        try:
            chars = [sum(len(m["content"]) + 16 for m in to_messages(r, n, cfg.data)) for n, r in sample]
        except SlmcError:
            return None  # data.records_valid says why
    return count * sum(chars) / len(chars)


def _record_count(path: Path) -> int | None:
    from ..stages.records import is_saved_dataset

    try:
        if path.suffix.lower() == ".jsonl" and path.is_file():
            with open(path, "rb") as handle:
                return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
        if path.suffix.lower() == ".parquet" and path.is_file():
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        if is_saved_dataset(path) and (path / "state.json").is_file():
            from datasets import load_from_disk

            return len(load_from_disk(str(path)))
    except Exception:  # unreadable: data.records_valid reports it
        return None
    return None
