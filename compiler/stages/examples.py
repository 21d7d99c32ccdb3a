"""The data stage for data.format=chat and instruction: records to conversations, split, written.

Every record becomes a list of {role, content} messages (stages.records reads the files,
compiler.chat converts a record). The conversations go to data/train.jsonl and
data/heldout.jsonl for the tokenize stage, which renders them with the chat template;
train.txt and heldout.txt hold their message contents as documents, the text the
byte-level BPE is trained on and the held-out text the deploy stages measure.
"""

from __future__ import annotations

import hashlib
import json

from ..chat import to_messages
from ..errors import ConfigError
from .data import Corpus, _join
from .records import records

Example = tuple[str, list[dict]]


def read_examples(paths: list[str], data, where: str) -> list[Example]:
    out: list[Example] = []
    for i, raw in enumerate(paths):
        for name, record in records(raw, f"{where}[{i}]", data.split):
            out.append((name, to_messages(record, name, data)))
    return out


def gather_examples(data) -> Corpus:
    if data.kind != "files":
        raise ConfigError(f"data.format={data.format} needs your own examples, but data.kind is {data.kind}",
                          where="data.format", fix=f"data=files data.format={data.format} data.train_files=[...]")
    train = read_examples(data.train_files, data, "data.train_files")
    if data.heldout_files:
        held = read_examples(data.heldout_files, data, "data.heldout_files")
    else:
        n_held = max(1, round(len(train) * data.heldout_fraction))
        if len(train) <= n_held:
            raise ConfigError(f"{len(train)} example(s): too few to hold {n_held} out for evaluation",
                              where="data.train_files", fix="give more examples, or held-out files with data.heldout_files")
        train, held = train[:-n_held], train[-n_held:]
    if data.max_chars:  # a cap on the examples read, by their message text
        kept, size = [], 0
        for ex in train:
            if size >= data.max_chars:
                break
            kept.append(ex)
            size += sum(len(m["content"]) for m in ex[1])
        train = kept
    train_text, held_text = _join(_documents(train), None), _join(_documents(held), None)
    train_lines, held_lines = _lines(train), _lines(held)
    info = {
        "kind": data.kind,
        "format": data.format,
        "train_examples": len(train),
        "heldout_examples": len(held),
        "train_sources": sorted({n.rsplit(":", 1)[0] for n, _ in train}),
        "heldout_sources": sorted({n.rsplit(":", 1)[0] for n, _ in held}),
        "train_chars": len(train_text),
        "heldout_chars": len(held_text),
        "train_sha256": hashlib.sha256(train_lines.encode()).hexdigest(),
        "heldout_sha256": hashlib.sha256(held_lines.encode()).hexdigest(),
    }
    return Corpus(train_text, held_text, info, (train_lines, held_lines))


def _documents(examples: list[Example]) -> list[tuple[str, str]]:
    return [(name, "\n".join(m["content"] for m in messages)) for name, messages in examples]


def _lines(examples: list[Example]) -> str:
    return "".join(json.dumps({"source": n, "messages": m}, ensure_ascii=False) + "\n" for n, m in examples)
