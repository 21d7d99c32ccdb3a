"""The checkpoints a run reads, resolved once: the local folder, the Hub revision, the family.

`init.path` (init=pretrained|prune) and `init.distill.teacher_path` (init=distill) name a
local folder or a Hub id. Planning resolves each into a `ResolvedCheckpoint`: the folder the
stages and train.py load (for a Hub id, huggingface_hub's cache snapshot, which is named by
its commit), the commit sha, and the family its config.json declares. plan.json, config.yaml,
train.py and the manifest all read that one record, so every file of a run names the same
revision and the same architecture.

Planning fetches config and tokenizer files only (what `slmc check` already fetched). The
stage that loads weights calls `fetch_weights`, pinned to the planned commit: a branch that
moves between planning and training cannot mix two revisions in one run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StageError
from ..families import Family, UnsupportedArchitecture, for_config, get
from ..hub import parse_hub_id

KEYS = ("init.path", "init.distill.teacher_path")
"""The config paths that name a checkpoint."""


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """One checkpoint a run reads, as planned."""

    key: str                     # the config path that names it
    source: str                  # as configured: a folder or a Hub id
    folder: str                  # absolute local folder (a Hub cache snapshot for a Hub id)
    repo_id: str | None = None   # the Hub repo (None for a local folder)
    revision: str | None = None  # the resolved Hub commit sha (None for a local folder)
    family: str | None = None    # the family config.json declares; None when it cannot be read

    @property
    def spec(self) -> Family | None:
        return get(self.family) if self.family else None

    def to_dict(self) -> dict[str, Any]:
        """plan.json / config.yaml provenance (local paths included: they stay on this machine)."""
        return {"source": self.source, "folder": self.folder, "hub": self.repo_id, "revision": self.revision,
                "family": self.family}

    def manifest_entry(self) -> dict[str, Any]:
        """The manifest's provenance: the Hub id and commit, never a local path (the bundle ships)."""
        return {"hub": self.repo_id, "revision": self.revision, "family": self.family}


def named_checkpoints(cfg) -> dict[str, str]:
    """config path -> value of every checkpoint this config reads (unused ones left out)."""
    found: dict[str, str] = {}
    if cfg.init.kind in ("pretrained", "prune") and cfg.init.path:
        found["init.path"] = cfg.init.path
    if cfg.init.kind == "distill" and cfg.init.distill.teacher_path:
        found["init.distill.teacher_path"] = cfg.init.distill.teacher_path
    return found


def resolve_checkpoints(cfg) -> tuple[ResolvedCheckpoint, ...]:
    """Every checkpoint of `cfg`, resolved without weights (HubError when a Hub id cannot be)."""
    return tuple(resolve(key, value) for key, value in named_checkpoints(cfg).items())


def resolve(key: str, source: str) -> ResolvedCheckpoint:
    """`source` as a local folder: itself (absolute), or a Hub id's cache snapshot with config and
    tokenizer files (`hub.fetch_check_files`: from the cache, or downloaded)."""
    ref = parse_hub_id(source)
    if ref is None:
        folder = os.path.abspath(os.path.expanduser(source))
        return ResolvedCheckpoint(key, source, folder, family=_family_name(Path(folder)))
    from ..hub import fetch_check_files

    snap = fetch_check_files(ref)
    return ResolvedCheckpoint(key, source, str(snap.folder), ref.repo_id, snap.commit, _family_name(snap.folder))


def fetch_weights(record: ResolvedCheckpoint) -> Path:
    """The folder with its safetensors weights present: a local folder as is; a Hub snapshot's
    weights fetched at the planned commit (huggingface_hub's progress bars, its cache)."""
    if record.revision is None:
        return Path(record.folder)
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    from ..checkpoint import local_checkpoint
    from .progress import is_quiet

    silence = is_quiet() and not are_progress_bars_disabled()  # a quiet compile (the Python API) prints nothing
    if silence:
        disable_progress_bars()
    try:
        local = local_checkpoint(f"{record.repo_id}@{record.revision}")
    finally:
        if silence:
            enable_progress_bars()
    if str(local.folder) != record.folder:  # the cache names a snapshot by its commit: a moved cache, not a race
        raise StageError(f"{record.source} resolved to {local.folder}, not the planned {record.folder}",
                         where=record.key, fix="rerun the same command: the plan is made again from the Hub cache")
    return local.folder


def from_plan(run_dir: Path, key: str) -> ResolvedCheckpoint | None:
    """The record plan.json holds for `key` (what train.py was rendered with), or None."""
    from ..layout import LAYOUT

    try:
        plan = json.loads((Path(run_dir) / LAYOUT.plan).read_text(encoding="utf-8"))
        entry = plan["provenance"]["checkpoints"][key]
        return ResolvedCheckpoint(key, entry["source"], entry["folder"], entry["hub"], entry["revision"],
                                  entry["family"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resolved(cfg, run_dir: Path, key: str) -> ResolvedCheckpoint:
    """The planned record of `key` (plan.json), else resolved again: what a stage loads."""
    record = from_plan(run_dir, key)
    if record is not None and record.source == named_checkpoints(cfg).get(key):
        return record
    return resolve(key, named_checkpoints(cfg)[key])


def _family_name(folder: Path) -> str | None:
    """The family of the folder's config.json, or None when it cannot be read or is not supported
    (`slmc check` refuses both before anything is planned; a library call may still get here)."""
    from ..checkpoint import BadFile, read_json

    try:
        raw = read_json(folder / "config.json")
        return for_config(raw).name if isinstance(raw, dict) else None
    except (BadFile, UnsupportedArchitecture, TypeError, ValueError):  # ValueError: a path no OS accepts (NUL)
        return None
