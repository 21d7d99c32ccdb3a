"""The stages that prepare training's inputs: data (gather text), tokenizer (reuse or train one), tokenize."""

from __future__ import annotations

import json
from pathlib import Path

from rich.markup import escape

from .. import writer
from ..errors import ConfigError
from ..layout import LAYOUT
from . import data as data_stage
from . import progress
from . import tokenizer as tokenizer_stage
from .base import Results
from .checkpoints import named_checkpoints, resolved
from .records import hub_dataset_revisions
from .results import DataResult, TokenizeResult, TokenizerResult


def run_data(cfg, run_dir: Path, results: Results) -> DataResult:
    corpus = data_stage.gather(cfg.data)
    report = writer.write_files(run_dir, corpus.files(LAYOUT))
    return DataResult(files=report, train_chars=corpus.info["train_chars"],
                      heldout_chars=corpus.info["heldout_chars"], train_sha256=corpus.info["train_sha256"],
                      format=cfg.data.format, train_examples=corpus.info.get("train_examples"),
                      heldout_examples=corpus.info.get("heldout_examples"),
                      hub_revisions=hub_dataset_revisions(cfg.data))


def run_tokenizer(cfg, run_dir: Path, results: Results) -> TokenizerResult:
    source = tokenizer_stage.tokenizer_source(cfg)
    template = tokenizer_stage.chat_template_for(cfg)  # None for data.format=text
    if source is not None:
        path, where = source  # a Hub checkpoint's: its resolved cache snapshot
        text = tokenizer_stage.existing_tokenizer(path, where)
        missing = tokenizer_stage.missing_special_tokens(template, text) if template else []
        if missing:
            raise ConfigError(f"the {template.name} chat template writes {', '.join(missing)}, which the tokenizer at "
                              f"{path} does not hold as tokens", where="data.chat_template",
                              fix="use the checkpoint's own template (data.chat_template=auto) or one whose tokens it has")
        path = _label(cfg, run_dir, where, path)
    else:
        train_text = (run_dir / LAYOUT.train_text).read_text(encoding="utf-8")
        extra = template.special_tokens if template else ()
        text, path = tokenizer_stage.train_bpe(train_text, cfg.model.vocab_size, extra), "trained (byte-level BPE)"
    # A text run that reuses a checkpoint (a Hub model, an earlier run) keeps that checkpoint's own
    # chat template, so a continued chat model still ships it.
    kept = template.source if template else (tokenizer_stage.source_chat_template(source[0]) if source else None)
    config = tokenizer_stage.tokenizer_config(text, cfg.export.max_seq_len, kept)
    files = {LAYOUT.tokenizer: text, LAYOUT.tokenizer_config: config}
    parsed = json.loads(text)
    return TokenizerResult(files=writer.write_files(run_dir, files), source=path,
                           vocab_size=len(parsed["model"]["vocab"]) + len(parsed.get("added_tokens", [])),
                           chat_template=template.name if template else None)


def _label(cfg, run_dir: Path, where: str, path: str) -> str:
    """How the report names a reused tokenizer: a Hub checkpoint by its id and commit, not its cache path."""
    if where in named_checkpoints(cfg):
        record = resolved(cfg, run_dir, where)
        if record.revision is not None:
            return f"{record.repo_id} at commit {record.revision[:12]} ({where})"
    return path


def run_tokenize(cfg, run_dir: Path, results: Results) -> TokenizeResult:
    """Tokenize the data once into rows with loss and attention masks (stages.tokenize)."""
    from tokenizers import Tokenizer

    from . import tokenize

    tok = results.get("tokenizer")
    if tok is not None:
        name = tok.chat_template
    else:  # run on its own (tests): the template the tokenizer stage chose
        chosen = tokenizer_stage.chat_template_for(cfg)
        name = chosen.name if chosen else None
    template, tokens = tokenize.template_from_run(run_dir, name)
    if cfg.data.format != "text" and template is None:
        raise ConfigError(f"data.format={cfg.data.format} but {LAYOUT.tokenizer_config} holds no chat template",
                          where="data.chat_template", fix="rerun the tokenizer stage (delete the run folder's tokenizer/)")
    tokenizer = Tokenizer.from_file(str(run_dir / LAYOUT.tokenizer))
    train, held = tokenize.Counts(), tokenize.Counts()
    train_rows = tokenize.tokenize_split(cfg, run_dir, "train", tokenizer, template, tokens, train)
    heldout_rows = tokenize.tokenize_split(cfg, run_dir, "heldout", tokenizer, template, tokens, held)
    result = TokenizeResult(
        files={LAYOUT.train_tokens: "write", LAYOUT.heldout_tokens: "write"}, format=cfg.data.format,
        row_len=cfg.train.seq_len + 1, train_rows=train_rows, heldout_rows=heldout_rows,
        train_targets=train.targets, examples=train.examples + held.examples,
        truncated=train.truncated + held.truncated, dropped=train.dropped + held.dropped,
        rejected=train.rejected + held.rejected, padding=train.padding + held.padding,
    )
    progress.say(f"  {escape(result.figure())}")  # the counts of what was cut, on the console as in the report
    return result
