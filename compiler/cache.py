"""The stage cache: reuse a stage's outputs when its config and inputs are unchanged.

A stage's key is the sha256 of its name, the config sections its registry entry
declares (the plan's `depends_on_config`), and the content hashes of everything it
consumes. An entry holds the stage's outputs and its typed result (`result.json`,
read back with the stage's own result type).
Outputs are stored under `<out_dir>/.cache/<stage>/<key>/` and restored by
copy, so sweep points that share a stage run it once. Copies, not hard links:
rerunning train.py in a run folder rewrites its checkpoint files in place, which
would silently corrupt a linked cache entry. An entry is published with an
atomic rename, so a crash never leaves a half entry that looks complete.
A cache folder slmc may not write (read-only, another user's) turns the cache
off for the rest of the compile with one warning: stages run and nothing is
lost; only the reuse is.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from . import __version__, writer
from .plan import PlannedStage
from .schema import SlmcConfig
from .stages.base import StageResult

CACHE_DIR = ".cache"
RESULT_FILE = "result.json"


def _hash_path(digest, path: Path) -> None:
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(child.relative_to(path).as_posix().encode() + b"\0")
            _hash_file(digest, child)
    elif path.is_file():
        _hash_file(digest, path)
    else:
        digest.update(b"<missing>")


def _hash_file(digest, path: Path) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def _config_value(cfg: SlmcConfig, dotted: str):
    value = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 of slmc's own sources and templates: a cached stage is stale once the code that
    made it changes, even without a version bump (an editable install between commits)."""
    import slmc
    import slmc.runtime
    import slmc.templates

    digest = hashlib.sha256(__version__.encode())
    for package in (slmc, slmc.runtime, slmc.templates):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*")):
            if path.suffix in (".py", ".j2") and "__pycache__" not in path.parts:
                digest.update(path.relative_to(root).as_posix().encode())
                _hash_file(digest, path)
    return digest.hexdigest()


def stage_key(stage: PlannedStage, cfg: SlmcConfig, run_dir: Path) -> str:
    digest = hashlib.sha256()
    config = {section: _config_value(cfg, section) for section in stage.depends_on_config}
    digest.update(json.dumps({"stage": stage.name, "code": code_fingerprint(), "config": config},
                             sort_keys=True).encode())
    from .stages.records import hub_dataset_ids

    datasets = hub_dataset_ids(cfg.data)
    for item in stage.consumes:
        for part in _with_siblings(item):
            digest.update(part.encode() + b"\0")
            if part in datasets:
                _hash_hub_dataset(digest, part, datasets[part])
                continue
            path = Path(part).expanduser()
            _hash_path(digest, path if path.is_absolute() else run_dir / part)
    return digest.hexdigest()[:32]


def _hash_hub_dataset(digest, raw: str, key: str) -> None:
    """A Hub dataset by the commit its snapshot resolves to: huggingface_hub names a snapshot folder
    by its commit, so the key changes when the dataset does, without hashing gigabytes of data. The
    snapshot is what the data stage reads next (fetched here, or from the cache when offline); one
    that cannot be resolved keys as such, and the stage then reports why."""
    from .errors import SlmcError
    from .stages.records import hub_dataset_folder

    try:
        commit = hub_dataset_folder(raw, key).name
    except SlmcError:
        commit = "<unresolved>"
    digest.update(f"hub dataset commit {commit}".encode() + b"\0")


def _with_siblings(item: str) -> list[str]:
    """A produced ONNX file brings its external weights (model.onnx.data) along."""
    return [item, f"{item}.data"] if item.endswith(".onnx") else [item]


def _copy_tree(source: Path, dest: Path) -> None:
    if not source.exists():
        return  # an optional sibling (no external data for a small model)
    if source.is_dir():
        shutil.copytree(source, dest, dirs_exist_ok=True)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)


# What a folder we may not write raises: read-only mode or file system, no permission.
# Anything else (a full disk) is not the cache's business to hide and propagates.
_NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


class StageCache:
    """Lookup and store of stage outputs for one output folder."""

    def __init__(self, out_dir: Path):
        self.root = Path(out_dir) / CACHE_DIR
        self.off = False  # set once a cache folder turned out not writable

    def cacheable(self, stage: PlannedStage) -> bool:
        """Target stages never run here; a stage may opt out (package stamps a creation time)."""
        return stage.runs_on == "host" and stage.stage.cacheable

    def _turn_off(self, exc: OSError) -> bool:
        """True (and one warning for the whole compile) when exc says the cache is not writable."""
        if exc.errno not in _NOT_WRITABLE:
            return False
        if not self.off:
            self.off = True
            print(f"slmc: warning: the stage cache {self.root} is not writable ({exc.strerror}): compiling "
                  f"without it; nothing is lost, but stages will not be reused. Fix: make {self.root} writable "
                  "(or delete it), or pass --no-cache to silence this", file=sys.stderr, flush=True)
        return True

    def _writable_folder(self, folder: Path) -> bool:
        """Create folder if needed; False (cache off) when it cannot be created or written."""
        if self.off:
            return False
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder))
        except OSError as exc:
            if self._turn_off(exc):
                return False
            raise
        return True

    @contextlib.contextmanager
    def claim(self, stage: PlannedStage, key: str) -> Iterator[None]:
        """Hold the entry's lock: parallel sweep points that need the same stage run it once;
        the others wait here, then restore what the first one stored. Without a writable
        cache there is no lock to take (nor anything to share): the stage just runs."""
        lock = self.root / stage.name / f"{key}.lock"
        if not self._writable_folder(lock.parent):
            yield
            return
        try:
            handle = open(lock, "a")
        except OSError as exc:
            if not self._turn_off(exc):
                raise
            yield
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                # A store killed mid-way left its staging folder; no one else stages this key now.
                writer.remove_stale_stagings(lock.parent, key)
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def restore(self, stage: PlannedStage, key: str, run_dir: Path) -> StageResult | None:
        entry = self.root / stage.name / key
        try:
            stored = (entry / RESULT_FILE).is_file()
        except OSError as exc:  # a cache folder we may not even read: a miss
            if self._turn_off(exc):
                return None
            raise
        if not stored:
            return None
        for item in (i for produced in stage.produces for i in _with_siblings(produced)):
            target = run_dir / item
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            _copy_tree(entry / "outputs" / item, target)
        return stage.stage.result.from_dict(json.loads((entry / RESULT_FILE).read_text()))

    def store(self, stage: PlannedStage, key: str, run_dir: Path, result: StageResult) -> None:
        parent = self.root / stage.name
        if not self._writable_folder(parent):
            return
        if (parent / key / RESULT_FILE).is_file():
            return
        with writer.staged_dir(parent, key) as tmp:
            for item in (i for produced in stage.produces for i in _with_siblings(produced)):
                _copy_tree(run_dir / item, tmp / "outputs" / item)
            writer.write_text(tmp, RESULT_FILE, json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str))
