"""Lineage: which run a run continued from, back to its first scratch, Hub or local checkpoint.

Each run's record (`lineage_record`) is made at plan time and written once into plan.json
(`provenance.lineage`), config.yaml (the same provenance section) and the bundle manifest
(`provenance.lineage`, without local paths, and the bundle `version` at the top). A record is

    {"run_name", "version", "config_sha256", "init": {...}, "parent": <the parent's record> | null}

where the parent's record is read from the parent run folder (its plan.json, or for a run made
before lineage existed, its config.yaml) plus `run_dir` and `manifest_sha256` (the parent bundle's
self-checksum; null when the parent packaged no bundle). The nesting carries the whole chain, so a
bundle alone answers `slmc lineage` on a device with no run folders. docs/lineage.md.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

from .errors import ConfigError
from .layout import LAYOUT
from .runs import INIT_KINDS, absolute_path, run_of

FIRST_VERSION = "1"
LOCAL_KEYS = ("run_dir", "path")
"""Keys that hold local paths: kept in plan.json and config.yaml, left out of the manifest (the bundle ships)."""
_HASH_LINE = re.compile(r"^# resolved by slmc; config sha256 ([0-9a-f]{64})$", re.M)
_BUMP = re.compile(r"^(.*?)(\d+)$")


def parent_run(cfg) -> Path | None:
    """The run folder whose final checkpoint `cfg` starts from (init.path inside a run), or None."""
    if cfg.init.kind not in INIT_KINDS or not cfg.init.path:
        return None
    return run_of(absolute_path(cfg.init.path))


def next_version(parent: str | None) -> str:
    """The bundle version after `parent`: its last number plus one ("3" -> "4", "1.4.2" -> "1.4.3")."""
    match = _BUMP.match(parent or FIRST_VERSION)
    if match is None:
        raise ConfigError(f"the parent's bundle version {parent!r} does not end in a number, so it cannot be "
                          "counted up", where="package.version", fix="set package.version=... for this run")
    return f"{match.group(1)}{int(match.group(2)) + 1}"


def lineage_record(cfg, run_name: str, checkpoints=()) -> dict[str, Any]:
    """This run's record; `checkpoints` are the plan's resolved checkpoints (their Hub commits)."""
    from .load import config_hash

    parent_dir = parent_run(cfg)
    parent = read_parent(parent_dir) if parent_dir is not None else None
    if cfg.package.version is not None:
        version = str(cfg.package.version)
    else:
        version = FIRST_VERSION if parent is None else next_version(parent.get("version") or FIRST_VERSION)
    return {"run_name": run_name, "version": version, "config_sha256": config_hash(cfg),
            "init": _init(cfg, checkpoints, parent), "parent": parent}


def _init(cfg, checkpoints, parent: dict | None) -> dict[str, Any]:
    """What the run's weights started from, for people: a run, a Hub commit, a local folder or random."""
    if parent is not None:
        return {"kind": "run", "run": parent["run_name"], "path": cfg.init.path}
    if cfg.init.kind in INIT_KINDS:
        record = next((c for c in checkpoints if c.key == "init.path"), None)
        if record is not None and record.revision is not None:
            return {"kind": "hub", "hub": record.repo_id, "revision": record.revision}
        return {"kind": "local", "path": cfg.init.path}
    started: dict[str, Any] = {"kind": "scratch", "model": cfg.model.name}
    if cfg.init.kind == "distill" and cfg.init.distill.teacher_path:
        started["teacher"] = _teacher(cfg.init.distill.teacher_path, checkpoints)
    return started


def _teacher(path: str, checkpoints) -> dict[str, Any]:
    """A distilled student's teacher: not a parent (the student's weights do not start from it),
    but what it learned from, so the record names it as init does a parent: run, Hub commit or folder."""
    run = run_of(absolute_path(path))
    if run is not None:
        record = read_parent(run, where="init.distill.teacher_path")
        return {"kind": "run", "run": record["run_name"], "version": record.get("version"),
                "manifest_sha256": record.get("manifest_sha256"), "path": path}
    found = next((c for c in checkpoints if c.key == "init.distill.teacher_path"), None)
    if found is not None and found.revision is not None:
        return {"kind": "hub", "hub": found.repo_id, "revision": found.revision}
    return {"kind": "local", "path": path}


def read_parent(run: Path, where: str = "init.path") -> dict[str, Any]:
    """The parent's record: its own lineage (or one made from its config.yaml), its folder and bundle."""
    try:
        plan = json.loads((run / LAYOUT.plan).read_text(encoding="utf-8"))
        config_text = (run / LAYOUT.config).read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the run's plan and config in {run}: {exc}", where=where,
                          fix="name a complete run folder") from None
    record = _get(plan, "provenance", "lineage")
    if not isinstance(record, dict):  # a run compiled before lineage was recorded
        import yaml

        config = yaml.safe_load(config_text) or {}
        found = _HASH_LINE.search(config_text)
        record = {"run_name": plan.get("run_name", run.name), "version": None,
                  "config_sha256": found.group(1) if found else None,
                  "init": {"kind": _get(config, "init", "kind"), "path": _get(config, "init", "path")},
                  "parent": None}
    manifest = _bundle_manifest(run, where)
    record = {**record, "run_dir": str(run), "manifest_sha256": manifest.get("manifest_sha256") if manifest else None}
    if manifest and isinstance(manifest.get("version"), str):
        record["version"] = manifest["version"]  # what consumers of the parent bundle saw
    return record


def _bundle_manifest(run: Path, where: str) -> dict | None:
    """The run's verified bundle manifest, None when it packaged none; ConfigError when it is corrupt."""
    from .runtime.errors import BundleError
    from .runtime.manifest import MANIFEST_NAME, read_manifest

    bundle = run / LAYOUT.bundle
    if not (bundle / MANIFEST_NAME).exists():
        return None
    try:
        return read_manifest(bundle)
    except BundleError as exc:
        raise ConfigError(f"the bundle manifest of run {run} cannot be trusted: {exc.message}", where=where,
                          fix=f"re-package {run}, or name another run") from None


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, Mapping) else None
    return data


def without_local_paths(value: Any) -> Any:
    """A copy of a record without the keys that name local paths (for the manifest)."""
    if isinstance(value, Mapping):
        return {k: without_local_paths(v) for k, v in value.items() if k not in LOCAL_KEYS}
    return value


def from_plan(run_dir: Path) -> dict | None:
    """The lineage record plan.json holds (what the package stage writes into the manifest)."""
    try:
        plan = json.loads((Path(run_dir) / LAYOUT.plan).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    record = _get(plan, "provenance", "lineage")
    return record if isinstance(record, dict) else None


def chain(record: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The record and its ancestors, newest first, each without its nested parent."""
    current: Any = record
    while isinstance(current, Mapping):
        yield {k: v for k, v in current.items() if k != "parent"}
        current = current.get("parent")
