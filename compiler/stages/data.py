"""The data stage: gather training and held-out text, deterministically.

The built-in corpus is a fixed, ordered list of Python standard-library
sources: text every Python installation has, so `slmc compile` works offline
with no download. Its exact content depends on the Python version, so the
stage records the sources and a sha256 of what it read.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, StageError
from ..schema import DataConfig
from .tokenizer import EOS

DOC_SEPARATOR = f"\n{EOS}\n"

# Modules present from Python 3.11 through 3.14 (none of the PEP 594 removals).
BUILTIN_MODULES = (
    "argparse", "textwrap", "dataclasses", "enum", "functools", "heapq", "bisect",
    "statistics", "fractions", "difflib", "csv", "configparser", "string", "shlex",
    "pprint", "calendar", "json/decoder", "json/encoder", "json/__init__",
    "collections/__init__", "contextlib", "copy", "fnmatch", "glob", "gettext",
    "getopt", "graphlib", "inspect", "ipaddress", "locale", "logging/__init__",
    "numbers", "operator", "optparse", "pickle", "queue", "random", "reprlib",
    "sched", "secrets", "selectors", "shutil", "smtplib", "socket", "stat",
    "subprocess", "tarfile", "tempfile", "threading", "timeit", "tokenize",
    "trace", "traceback", "types", "typing", "uuid", "warnings", "wave", "weakref",
    "base64", "codecs", "colorsys", "datetime", "doctest", "filecmp", "ftplib",
    "html/parser", "http/client", "imaplib", "keyword", "linecache", "mimetypes",
    "netrc", "ntpath", "posixpath", "quopri", "runpy", "signal", "site", "ssl",
    "symtable", "tabnanny", "token", "tty", "zipapp", "ast",
    # held-out tail (the split takes the last documents)
    "email/message", "email/utils", "urllib/parse", "unittest/case",
)


@dataclass(frozen=True)
class Corpus:
    """Training and held-out text plus a record of where it came from."""

    train: str
    heldout: str
    info: dict
    records: tuple[str, str] | None = None
    """data.format chat/instruction: train and held-out examples as JSON lines of {"source", "messages"}."""

    def files(self, layout) -> dict[str, str]:
        files = {
            layout.train_text: self.train,
            layout.heldout_text: self.heldout,
            layout.data_info: json.dumps(self.info, indent=2, sort_keys=True) + "\n",
        }
        if self.records is not None:
            files[layout.train_records], files[layout.heldout_records] = self.records
        return files


def builtin_documents() -> list[tuple[str, str]]:
    """(name, text) for each built-in module that exists in this Python."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for module in BUILTIN_MODULES:
        path = stdlib / f"{module}.py"
        if path.is_file():
            docs.append((f"stdlib/{module}.py", path.read_text(encoding="utf-8")))
    if not docs:
        raise StageError(f"no standard-library sources found under {stdlib}", where="data.kind=builtin",
                         fix="point data=files at your own text: data.train_files=[...]")
    return docs


def read_documents(paths: list[str], jsonl_field: str, where: str, split: str = "train") -> list[tuple[str, str]]:
    """(name, text) per document of the user's data; errors name the file and line or record (exit 2).

    .txt (one document per file) and .jsonl are read here as before; the other formats are
    records read with `datasets` (stages.records), their text in `jsonl_field`.
    """
    docs = []
    for i, raw in enumerate(paths):
        path = Path(raw).expanduser()
        key = f"{where}[{i}]"
        if uses_records(raw):  # .json, .parquet, .csv, a save_to_disk folder, a Hub dataset id
            docs.extend(_record_documents(raw, jsonl_field, key, split))
            continue
        if not path.is_file():
            what = "not a regular file" if path.exists() else "file not found"
            raise ConfigError(f"{what}: {path}", where=key, fix="give an existing .txt or .jsonl file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})", where=key,
                              fix="convert the file to UTF-8") from None
        _refuse_nul(path, text, key)
        if path.suffix == ".jsonl":
            docs.extend(_jsonl_documents(path, text, jsonl_field, key))
        else:
            docs.append((str(path), text))
    return docs


def uses_records(raw: str) -> bool:
    """A path (or Hub id) read through stages.records rather than as a .txt/.jsonl text file."""
    from ..hub import parse_hub_id
    from .records import BUILDERS, is_saved_dataset

    path = Path(raw).expanduser()
    if parse_hub_id(raw) is not None or is_saved_dataset(path):
        return True
    return path.suffix.lower() in BUILDERS and path.suffix.lower() != ".jsonl"


def _record_documents(raw: str, field: str, key: str, split: str) -> list[tuple[str, str]]:
    from .records import records

    docs = []
    for name, record in records(raw, key, split):
        value = record.get(field)
        if not isinstance(value, str):
            raise ConfigError(f"{name}: no string field {field!r}", where="data.jsonl_field",
                              fix=f"set data.jsonl_field to the key that holds the text (keys: {sorted(record)[:8]})")
        docs.append((name, value))
    return docs


SAMPLE_BYTES = 64 * 1024
"""How much of each data file `sample_problem` reads at check time: enough for the first
hundreds of records, small enough that `slmc check` stays instant on any corpus."""


def sample_problem(raw_path: str, jsonl_field: str, key: str) -> ConfigError | None:
    """What the data stage would refuse in the first SAMPLE_BYTES of a data file, or None.

    Lets `slmc check` refuse a binary file, a file that is not UTF-8, or a broken first
    jsonl record before anything trains; the data stage still reads every line.
    """
    path = Path(raw_path).expanduser()
    if not path.is_file():
        return None  # missing, a folder, or a FIFO that would block: read_documents refuses it
    try:
        with open(path, "rb") as handle:
            head = handle.read(SAMPLE_BYTES)
            whole = not handle.read(1)
    except OSError:
        return None  # data.paths_exist says why
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=whole)
    except UnicodeDecodeError as exc:
        return ConfigError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})", where=key,
                           fix="convert the file to UTF-8")
    try:
        _refuse_nul(path, text, key)
        if path.suffix == ".jsonl":
            complete = text if whole else text[: text.rfind("\n") + 1]
            _jsonl_documents(path, complete, jsonl_field, key)
    except ConfigError as exc:
        return exc
    return None


def _refuse_nul(path: Path, text: str, key: str) -> None:
    """A NUL character: binary data, or UTF-16 read as UTF-8 (a NUL beside every ASCII letter).

    A tokenizer trained on it learns a handful of NUL runs, and training fails a minute
    later for lack of tokens; text never holds one.
    """
    first = text.find("\0")
    if first >= 0:
        line = text.count("\n", 0, first) + 1
        raise ConfigError(f"{path}:{line}: a NUL byte; this is binary data (or UTF-16), not UTF-8 text", where=key,
                          fix="give UTF-8 text files (convert UTF-16 with iconv -f UTF-16 -t UTF-8)")


def _jsonl_documents(path: Path, text: str, field: str, key: str) -> list[tuple[str, str]]:
    docs = []
    # JSON Lines ends lines with \n only; str.splitlines() would also split at U+2028 or
    # U+0085, which JSON allows raw inside a string.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{lineno}: invalid JSON ({exc.msg})", where=key,
                              fix="one JSON object per line") from None
        except RecursionError:
            raise ConfigError(f"{path}:{lineno}: JSON nested deeper than Python's parser goes", where=key,
                              fix="one flat JSON object per line, its text in a string field") from None
        value = record.get(field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise ConfigError(f"{path}:{lineno}: no string field {field!r}", where="data.jsonl_field",
                              fix=f"set data.jsonl_field to the key that holds the text (keys: {sorted(record)[:8] if isinstance(record, dict) else '-'})")
        _refuse_surrogates(path, lineno, field, value, key)
        docs.append((f"{path}:{lineno}", value))
    return docs


def _refuse_surrogates(path: Path, lineno: int, field: str, value: str, key: str) -> None:
    """JSON may escape half of a UTF-16 pair ("\\ud800") that Python keeps as a lone surrogate;
    it is no character, and writing the text as UTF-8 would fail at the end of the stage."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"{path}:{lineno}: field {field!r} holds a lone surrogate \\u{ord(value[exc.start]):04x} "
                          f"(character {exc.start}), which is not text", where=key,
                          fix="escape characters outside the BMP as a full surrogate pair, or write them as UTF-8") from None


def split_heldout(docs: list[tuple[str, str]], fraction: float) -> tuple[list, list]:
    """Hold out the last documents covering `fraction` of the characters (at least one)."""
    if len(docs) == 1:
        name, text = docs[0]
        cut = text.rfind("\n", 0, int(len(text) * (1 - fraction))) + 1 or int(len(text) * (1 - fraction))
        return [(name, text[:cut])], [(name, text[cut:])]
    total = sum(len(t) for _, t in docs)
    held, size = [], 0
    for doc in reversed(docs[1:]):
        if size >= total * fraction:
            break
        held.insert(0, doc)
        size += len(doc[1])
    return docs[: len(docs) - len(held)], held


def _join(docs: list[tuple[str, str]], max_chars: int | None) -> str:
    # Documents are separated by the end-of-text special token, which the tokenizer
    # encodes as one id: the model learns where documents end, as in GPT-style pretraining.
    text = DOC_SEPARATOR.join(t.strip("\n") for _, t in docs) + "\n"
    return text[:max_chars] if max_chars else text


def gather(data: DataConfig) -> Corpus:
    """Read the configured data and split it into train / held-out."""
    if data.format != "text":
        from .examples import gather_examples

        return gather_examples(data)
    if data.kind == "builtin":
        docs = builtin_documents()
        train_docs, held_docs = split_heldout(docs, data.heldout_fraction)
    else:
        docs = read_documents(data.train_files, data.jsonl_field, "data.train_files", data.split)
        if data.heldout_files:
            train_docs = docs
            held_docs = read_documents(data.heldout_files, data.jsonl_field, "data.heldout_files", data.split)
        else:
            train_docs, held_docs = split_heldout(docs, data.heldout_fraction)
    train, heldout = _join(train_docs, data.max_chars), _join(held_docs, None)
    if not train.strip() or not heldout.strip():
        raise ConfigError("training or held-out text is empty", where="data",
                          fix="give more text, or held-out files with data.heldout_files")
    info = {
        "kind": data.kind,
        "format": data.format,
        "train_sources": [n for n, _ in train_docs],
        "heldout_sources": [n for n, _ in held_docs],
        "train_chars": len(train),
        "heldout_chars": len(heldout),
        "train_sha256": hashlib.sha256(train.encode()).hexdigest(),
        "heldout_sha256": hashlib.sha256(heldout.encode()).hexdigest(),
    }
    return Corpus(train, heldout, info)
