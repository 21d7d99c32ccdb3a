"""The tokenize stage: the data, tokenized once, as rows train.py reads.

Writes data/train.tokens.safetensors and data/heldout.tokens.safetensors, each with
  input_ids       int32 [rows, seq_len + 1]
  loss_mask       uint8 [rows, seq_len + 1]  1: token j is a training target (column 0 never is)
  attention_mask  uint8 [rows, seq_len + 1]  0: padding
data.format=text: exactly the blocks train.py used to pack itself (documents joined by eos,
stride seq_len, consecutive rows share one token, no padding, every target trained).
chat/instruction: each example rendered with the chat template; whole examples per row
(packing) or one per row, right-padded; loss on the assistant turns (data.loss_on).

The work streams: documents and examples are tokenized data.chunk_records at a time and
the rows appended to the output as they fill, so neither the corpus's token list nor its
rows sit in memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..chat import ChatTemplate, render_with_targets
from ..errors import ConfigError
from ..layout import LAYOUT
from .rows import RowWriter
from .tokenizer import EOS, PAD


@dataclass
class Counts:
    examples: int = 0
    truncated: int = 0
    dropped: int = 0
    rejected: int = 0
    padding: int = 0
    targets: int = 0


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# -- text: today's packed blocks ----------------------------------------------------------


def text_pieces(path: Path, separator: str | None, read_size: int = 1 << 20) -> Iterator[str]:
    """The file's text split at `separator` (the eos token's text), read read_size characters at a time."""
    rest = ""
    with open(path, encoding="utf-8", newline="") as handle:
        while chunk := handle.read(read_size):
            if separator is None:
                rest += chunk
                continue
            parts = (rest + chunk).split(separator)
            rest = parts.pop()
            yield from parts
    yield rest


def text_rows(path: Path, tokenizer, seq_len: int, chunk: int, counts: Counts) -> Iterator[np.ndarray]:
    """Blocks of seq_len + 1 ids at stride seq_len over the whole token stream, eos between documents.

    Special tokens split text before BPE runs, so encoding the documents one by one gives exactly
    the ids of the whole text; the tail shorter than a block is left out (as train.py did)."""
    eos_id = tokenizer.token_to_id(EOS)
    buffer = np.zeros(0, dtype=np.int64)
    first = True
    for pieces in _chunks(text_pieces(path, EOS if eos_id is not None else None), chunk):
        ids: list[int] = []
        for encoding in tokenizer.encode_batch(pieces, add_special_tokens=False):
            if not first:
                ids.append(eos_id)
            first = False
            ids.extend(encoding.ids)
        counts.examples += len(pieces)
        buffer = np.concatenate([buffer, np.asarray(ids, dtype=np.int64)])
        n = (len(buffer) - 1) // seq_len
        if n >= 1:
            yield np.lib.stride_tricks.sliding_window_view(buffer[: n * seq_len + 1], seq_len + 1)[::seq_len]
            buffer = buffer[n * seq_len:]


# -- chat and instruction: rendered examples, masked, packed or padded ----------------------


def example_records(path: Path) -> Iterator[tuple[str, list[dict]]]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                yield record["source"], record["messages"]


def encode_examples(examples: list, template: ChatTemplate, tokens: dict, tokenizer, data,
                    max_length: int, counts: Counts) -> Iterator[tuple[list[int], list[int]]]:
    """(ids, mask) per example of one chunk, after data.overflow; mask 1 on the target tokens."""
    rendered = [render_with_targets(template, messages, tokens, name) for name, messages in examples]
    encodings = tokenizer.encode_batch([text for text, _ in rendered], add_special_tokens=False)
    for (text, spans), encoding in zip(rendered, encodings):
        counts.examples += 1
        ids = list(encoding.ids)
        if data.loss_on == "all":
            mask = [1] * len(ids)
        else:  # a token is a target when it starts inside an assistant turn
            starts = np.fromiter((start for start, _ in encoding.offsets), dtype=np.int64, count=len(ids))
            inside = np.zeros(len(ids), dtype=bool)
            for a, b in spans:
                inside |= (starts >= a) & (starts < b)
            mask = inside.astype(np.uint8).tolist()
        if len(ids) > max_length:
            if data.overflow == "drop":
                counts.dropped += 1
                continue
            counts.truncated += 1
            ids, mask = ids[:max_length], mask[:max_length]
        mask[0] = 0  # nothing before an example's first token predicts it
        if not any(mask):
            counts.rejected += 1
            continue
        yield ids, mask


def pack_rows(examples: Iterable[tuple[list[int], list[int]]], row_len: int, pad_id: int, packing: bool,
              counts: Counts) -> Iterator[tuple[list[int], list[int], list[int]]]:
    """Rows of row_len tokens: whole examples one after another (packing), or one each; padded at the end."""
    ids: list[int] = []
    mask: list[int] = []

    def flush():
        pad = row_len - len(ids)
        counts.padding += pad
        counts.targets += sum(mask)
        return ids + [pad_id] * pad, mask + [0] * pad, [1] * len(ids) + [0] * pad

    for ex_ids, ex_mask in examples:
        if ids and (not packing or len(ids) + len(ex_ids) > row_len):
            yield flush()
            ids, mask = [], []
        ids, mask = ids + ex_ids, mask + ex_mask
    if ids:
        yield flush()


# -- the stage -----------------------------------------------------------------------------


def tokenize_split(cfg, run_dir: Path, split: str, tokenizer, template: ChatTemplate | None,
                   tokens: dict, counts: Counts) -> int:
    """Write one split's rows; the number of rows."""
    seq_len, data = cfg.train.seq_len, cfg.data
    out = run_dir / (LAYOUT.train_tokens if split == "train" else LAYOUT.heldout_tokens)
    with RowWriter(out, seq_len + 1, {"format": data.format, "split": split}) as writer:
        if template is None:
            source = run_dir / (LAYOUT.train_text if split == "train" else LAYOUT.heldout_text)
            for block in text_rows(source, tokenizer, seq_len, data.chunk_records, counts):
                mask = np.ones(block.shape, dtype=np.uint8)
                mask[:, 0] = 0  # the first token of a row is no target (it is the previous row's last)
                writer.add(block, mask, np.ones(block.shape, dtype=np.uint8))
                counts.targets += block.size - len(block)
        else:
            source = run_dir / (LAYOUT.train_records if split == "train" else LAYOUT.heldout_records)
            pad_id = _pad_id(tokenizer)
            max_length = data.max_length or seq_len
            encoded = (pair for examples in _chunks(example_records(source), data.chunk_records)
                       for pair in encode_examples(examples, template, tokens, tokenizer, data, max_length, counts))
            for rows in _chunks(pack_rows(encoded, seq_len + 1, pad_id, data.packing, counts), data.chunk_records):
                writer.add(*(np.asarray(part) for part in zip(*rows)))
        rows = writer.rows
    if rows == 0:
        what = (f"fewer than one block of train.seq_len + 1 = {seq_len + 1} tokens" if template is None
                else "no example left after data.overflow (each dropped or without a target token)")
        raise ConfigError(f"the {split} data has {what}", where="data",
                          fix="give more data, or lower train.seq_len" if template is None
                          else "raise data.max_length, set data.overflow=truncate, or check the examples")
    return rows


def _pad_id(tokenizer) -> int:
    for text in (PAD, EOS):
        found = tokenizer.token_to_id(text)
        if found is not None:
            return found
    return 0


def template_from_run(run_dir: Path, name: str | None) -> tuple[ChatTemplate | None, dict]:
    """The chat template and bos/eos texts the tokenizer stage wrote into tokenizer_config.json."""
    from ..chat import CATALOGUE, template_of

    config = json.loads((run_dir / LAYOUT.tokenizer_config).read_text(encoding="utf-8"))
    tokens = {"bos": config.get("bos_token"), "eos": config.get("eos_token")}
    source = template_of(config)
    if source is None or name is None:
        return None, tokens
    special = CATALOGUE[name][1] if name in CATALOGUE else ()
    return ChatTemplate(name, source, special), tokens
