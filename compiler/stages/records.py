"""Records of the user's data, one reader for every format: (name, record) in file order.

`.jsonl` is read line by line here, so that a broken record is named by its line
(datasets' JSON builder reports a pyarrow error without one). `.json`, `.parquet`,
`.csv`, a folder written by `datasets.save_to_disk` and a Hub dataset id are read
with the `datasets` library, streamed (`streaming=True`: no Arrow copy of the corpus
is written and records arrive one by one) or memory-mapped (save_to_disk).
A Hub dataset id is resolved like a model id: huggingface_hub's cache, HF_HUB_OFFLINE.
`datasets` is imported inside the functions: `slmc check` on text files never pays for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError
from ..hub import HubError, parse_hub_id

BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
"""File suffix -> the `datasets` packaged builder that reads it."""

SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
"""Files `save_to_disk` writes: a folder holding one is a saved dataset."""

Record = tuple[str, dict]


def records(raw: str, key: str, split: str, limit: int | None = None, local_only: bool = False) -> Iterator[Record]:
    """("file:record N", record) for each record of a data file, saved dataset or Hub dataset.

    `limit` stops after that many records (the check-time sample); `local_only` reads a Hub
    dataset only from the cache and yields nothing when it is not there (check never downloads).
    Errors name the file, the record and the config path `key` (exit 2).
    """
    count = 0
    for item in _all_records(raw, key, split, local_only):
        if limit is not None and count >= limit:
            return
        count += 1
        yield item


def _all_records(raw: str, key: str, split: str, local_only: bool = False) -> Iterator[Record]:
    ref = parse_hub_id(raw)
    if ref is not None:
        try:
            folder = hub_dataset_folder(raw, key, local_only)
        except HubError:
            if local_only:
                return  # not cached yet: the compile downloads it, and says so if it cannot
            raise
        files = _data_files(folder, split)
        if not files:
            raise ConfigError(f"Hub dataset {raw} ({folder}) holds no .jsonl/.json/.parquet/.csv file", where=key,
                              fix="name a dataset repo with data files, or download it and give the local files")
        for path in files:
            yield from _file_records(path, key, split)
        return
    path = Path(raw).expanduser()
    if path.is_dir():
        yield from _saved_records(path, key, split)
    elif path.is_file():
        yield from _file_records(path, key, split)
    else:
        raise ConfigError(f"file not found: {path}", where=key, fix="give an existing data file, folder or Hub dataset id")


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in SAVED_MARKERS)


def _file_records(path: Path, key: str, split: str) -> Iterator[Record]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _jsonl_records(path, key)
        return
    builder = BUILDERS.get(suffix)
    if builder is None:
        raise ConfigError(f"{path}: unsupported data file type {suffix or '(no suffix)'!r} for records", where=key,
                          fix="give .jsonl, .json, .parquet or .csv files, or a folder written by save_to_disk")
    from datasets import load_dataset  # the datasets library: parquet, csv and JSON arrays done right

    try:
        stream = load_dataset(builder, data_files=str(path), split="train", streaming=True)
        for i, record in enumerate(stream, start=1):
            yield f"{path}:record {i}", dict(record)
    except ConfigError:
        raise
    except Exception as exc:  # pyarrow / datasets raise many types; each becomes one message naming the file
        raise ConfigError(f"{path}: cannot be read as {builder} ({type(exc).__name__}: {_first_line(exc)})",
                          where=key, fix=f"check that the file is valid {builder}") from None


def _jsonl_records(path: Path, key: str) -> Iterator[Record]:
    with open(path, encoding="utf-8", newline="") as handle:
        # JSON Lines ends lines with \n only; iterating with newline="" keeps \r and U+2028 inside lines
        for lineno, line in enumerate(_lines(handle), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deep"
                raise ConfigError(f"{path}:{lineno}: invalid JSON ({msg})", where=key,
                                  fix="one JSON object per line") from None
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{path}:{lineno}: not UTF-8 ({exc.reason})", where=key,
                                  fix="convert the file to UTF-8") from None
            if not isinstance(record, dict):
                raise ConfigError(f"{path}:{lineno}: a JSON {type(record).__name__}, not an object", where=key,
                                  fix="one JSON object per line")
            yield f"{path}:{lineno}", record


def _lines(handle) -> Iterator[str]:
    """Lines split at \\n only, read in 1 MiB pieces (a file never sits in memory whole)."""
    rest = ""
    try:
        while chunk := handle.read(1 << 20):
            parts = (rest + chunk).split("\n")
            rest = parts.pop()
            yield from parts
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{handle.name}: not UTF-8 text ({exc.reason})", fix="convert the file to UTF-8") from None
    if rest:
        yield rest


def _saved_records(path: Path, key: str, split: str) -> Iterator[Record]:
    if not is_saved_dataset(path):
        raise ConfigError(f"{path} is a folder but not a dataset written by datasets.save_to_disk", where=key,
                          fix="give data files, or a folder written by Dataset.save_to_disk")
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(str(path))  # memory-mapped Arrow: records are read as they are iterated
    except Exception as exc:
        raise ConfigError(f"{path}: cannot be loaded with datasets.load_from_disk ({_first_line(exc)})", where=key,
                          fix="write it again with save_to_disk") from None
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise ConfigError(f"{path} has no split {split!r} (it has {', '.join(dataset)})", where="data.split",
                              fix=f"set data.split to one of {', '.join(dataset)}")
        dataset = dataset[split]
    for i, record in enumerate(dataset, start=1):
        yield f"{path}:record {i}", dict(record)


def hub_dataset_folder(raw: str, key: str, local_only: bool = False) -> Path:
    """The cache snapshot folder of a Hub dataset id (downloaded unless HF_HUB_OFFLINE is set)."""
    from huggingface_hub import snapshot_download

    from ..hub import _explain, hub_offline

    ref = parse_hub_id(raw)
    assert ref is not None
    try:
        return Path(snapshot_download(ref.repo_id, repo_type="dataset", revision=ref.revision,
                                      allow_patterns=["*.jsonl", "*.json", "*.parquet", "*.csv", "**/*.jsonl",
                                                      "**/*.json", "**/*.parquet", "**/*.csv"],
                                      local_files_only=local_only or hub_offline()))
    except Exception as exc:
        err = _explain(ref, exc)
        fix = (err.fix or "").replace(f"hf download {ref.repo_id}", f"hf download {ref.repo_id} --repo-type dataset")
        raise HubError(err.message.replace("is not a model", "is not a dataset"), where=key, fix=fix) from None


def hub_dataset_ids(data) -> dict[str, str]:
    """Each data file of data.train_files / heldout_files that is a Hub dataset id (org/name[@revision],
    not a local path) -> the config path that names it first."""
    from ..hub import parse_hub_id

    found: dict[str, str] = {}
    for key, paths in (("data.train_files", data.train_files), ("data.heldout_files", data.heldout_files)):
        for raw in paths:
            if raw not in found and parse_hub_id(raw) is not None:
                found[raw] = key
    return found


def hub_dataset_revisions(data) -> dict[str, str]:
    """Each Hub dataset id -> the commit of the snapshot read (the cached one: the data stage fetched
    it), for the manifest's provenance."""
    return {raw: hub_dataset_folder(raw, key, local_only=True).name for raw, key in hub_dataset_ids(data).items()}


def _data_files(folder: Path, split: str) -> list[Path]:
    """The snapshot's data files, sorted; those naming the split when some do (data/train-*.parquet)."""
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in BUILDERS
                   and p.name not in ("dataset_info.json", "dataset_infos.json"))
    named = [p for p in found if split in p.relative_to(folder).as_posix()]
    return named or found


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
