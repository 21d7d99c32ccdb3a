"""The stages that prepare training's inputs: data (gather text) and tokenizer (reuse or train one)."""

from __future__ import annotations

import json
from pathlib import Path

from .. import writer
from ..layout import LAYOUT
from . import data as data_stage
from . import tokenizer as tokenizer_stage
from .base import Results
from .checkpoints import named_checkpoints, resolved
from .results import DataResult, TokenizerResult


def run_data(cfg, run_dir: Path, results: Results) -> DataResult:
    corpus = data_stage.gather(cfg.data)
    report = writer.write_files(run_dir, corpus.files(LAYOUT))
    return DataResult(files=report, train_chars=corpus.info["train_chars"],
                      heldout_chars=corpus.info["heldout_chars"], train_sha256=corpus.info["train_sha256"])


def run_tokenizer(cfg, run_dir: Path, results: Results) -> TokenizerResult:
    source = tokenizer_stage.tokenizer_source(cfg)
    template = None
    if source is not None:
        path, where = source  # a Hub checkpoint's: its resolved cache snapshot
        text = tokenizer_stage.existing_tokenizer(path, where)
        template = tokenizer_stage.source_chat_template(path)
        path = _label(cfg, run_dir, where, path)
    else:
        train_text = (run_dir / LAYOUT.train_text).read_text(encoding="utf-8")
        text, path = tokenizer_stage.train_bpe(train_text, cfg.model.vocab_size), "trained (byte-level BPE)"
    files = {
        LAYOUT.tokenizer: text,
        LAYOUT.tokenizer_config: tokenizer_stage.tokenizer_config(text, cfg.export.max_seq_len, template),
    }
    parsed = json.loads(text)
    return TokenizerResult(files=writer.write_files(run_dir, files), source=path,
                           vocab_size=len(parsed["model"]["vocab"]) + len(parsed.get("added_tokens", [])))


def _label(cfg, run_dir: Path, where: str, path: str) -> str:
    """How the report names a reused tokenizer: a Hub checkpoint by its id and commit, not its cache path."""
    if where in named_checkpoints(cfg):
        record = resolved(cfg, run_dir, where)
        if record.revision is not None:
            return f"{record.repo_id} at commit {record.revision[:12]} ({where})"
    return path
