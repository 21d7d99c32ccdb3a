"""`slmc diff A B`: what changed between two bundles or run folders.

Compared by content, never by time: the resolved configs by config path (each run's
config.yaml, flattened), the manifests' architecture, precision, runtime and limits, the
files by sha256 (the manifest's hashes; a folder without a manifest is hashed here), the
per-stage metrics (the manifest's `metrics` and metrics.jsonl's stage records and last
training record) and the size. Timings, creation times and package versions are shown as
provenance and do not make two bundles different. `--measure` adds both bundles measured
side by side (slmc.runtime.compare). A is the old side, B the new one: "added" is in B only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import SlmcError
from ..layout import LAYOUT
from .locate import Located, locate, sha256_bytes

MANIFEST_SKIP = ("metrics", "hashes", "provenance", "manifest_sha256")
"""Manifest sections compared elsewhere (metrics, files) or not content (provenance, the checksum)."""
NOT_CONTENT = ("seconds", "created")
"""Metric keys that hold when or how long, not what: shown, never counted as a difference."""
GATE = "regression_gate"
"""A gate's record (metrics.regression_gate) is a measurement of another bundle: summarised, not diffed."""


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as {dotted.path: leaf}; lists stay whole (a list of token ids is one value)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


@dataclass
class Side:
    """One side of a diff, read from disk."""

    where: Located
    manifest: dict | None
    config: dict[str, Any] | None     # flattened config.yaml (provenance section left out)
    files: dict[str, str]             # relative path -> sha256
    sizes: dict[str, int]
    metrics: dict[str, Any] = field(default_factory=dict)      # the manifest's, flattened
    run_metrics: dict[str, Any] | None = None                  # metrics.jsonl's; None without a run folder

    @property
    def bytes(self) -> int:
        return sum(self.sizes.values())


def _hash_folder(folder: Path) -> tuple[dict[str, str], dict[str, int]]:
    """sha256 and size of every regular file under folder (hidden entries, links and the stage cache skipped)."""
    hashes, sizes = {}, {}
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root) / name
            if name.startswith(".") or path.is_symlink() or not path.is_file():
                continue
            rel = path.relative_to(folder).as_posix()
            hashes[rel], sizes[rel] = sha256_bytes(path), path.stat().st_size
    return hashes, sizes


def _run_metrics(run: Path) -> dict[str, Any]:
    """metrics.jsonl's stage records (stage_eval.<stage>.<key>) and its last training loss and eval perplexity."""
    path = run / LAYOUT.metrics
    out: dict[str, Any] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if record.get("event") == "stage_eval":
            out[f"stage_eval.{record.get('stage')}.heldout_ppl"] = record.get("heldout_ppl")
        elif "step" in record:
            for key in ("loss", "eval_ppl"):
                if key in record:
                    out[f"train.last_{key}"] = record[key]
            out["train.last_step"] = record["step"]
    return out


def read_side(path: str | Path) -> Side:
    """A bundle folder or a run folder; anything else is an error naming the path (exit 2)."""
    from ..runtime.errors import BundleError
    from ..runtime.manifest import read_manifest

    where = locate(path)
    if where.bundle is None and where.run is None:
        raise SlmcError(f"{where.given} is neither a bundle folder (manifest.json) nor a run folder (config.yaml)",
                        where=str(path), fix="pass generated/<run> or generated/<run>/bundle")
    manifest = None
    if where.bundle is not None:
        try:
            manifest = read_manifest(where.bundle)
        except BundleError as exc:
            raise SlmcError(exc.message, where=exc.where, fix=exc.fix) from None
    config = None
    if where.run is not None and (where.run / LAYOUT.config).is_file():
        data = yaml.safe_load((where.run / LAYOUT.config).read_text(encoding="utf-8")) or {}
        data.pop("provenance", None)  # local checkpoint folders: where, not what
        config = flatten(data)
    if manifest is not None:
        files = dict(manifest["hashes"])
        sizes = {n: (where.bundle / n).stat().st_size for n in files if (where.bundle / n).is_file()}
    else:
        files, sizes = _hash_folder(where.run)
    metrics = flatten({k: v for k, v in manifest["metrics"].items() if k != GATE}) if manifest else {}
    run_metrics = _run_metrics(where.run) if where.run is not None else None
    return Side(where, manifest, config, files, sizes, metrics, run_metrics)


def _changes(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[dict[str, Any]]:
    if a is None or b is None:
        return []
    return [{"path": k, "a": a.get(k), "b": b.get(k)} for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _not_content(key: str) -> bool:
    return any(part in key for part in NOT_CONTENT)


def _metric_rows(a: Side, b: Side) -> list[dict[str, Any]]:
    """Manifest metrics, and metrics.jsonl's where both sides are in a run folder (a bare bundle has none)."""
    rows = []
    for row in _changes(a.metrics, b.metrics) + _changes(a.run_metrics, b.run_metrics):
        va, vb = row["a"], row["b"]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (va, vb))
        row["change"] = f"{vb / va - 1:+.2%}" if numeric and va else None
        row["content"] = not _not_content(row["path"])
        rows.append(row)
    return rows


def diff(path_a: str | Path, path_b: str | Path, *, measure: bool = False, text: str | None = None,
         repeats: int = 3) -> dict[str, Any]:
    """Everything that differs between A and B, JSON-ready; `identical` says whether their content is the same."""
    a, b = read_side(path_a), read_side(path_b)
    manifest_a = {k: v for k, v in (a.manifest or {}).items() if k not in MANIFEST_SKIP}
    manifest_b = {k: v for k, v in (b.manifest or {}).items() if k not in MANIFEST_SKIP}
    files = {
        "added": sorted(set(b.files) - set(a.files)),
        "removed": sorted(set(a.files) - set(b.files)),
        "changed": sorted(n for n in set(a.files) & set(b.files) if a.files[n] != b.files[n]),
        "compared": "bundle files (manifest hashes)" if a.manifest and b.manifest else "folder files (hashed here)",
    }
    result: dict[str, Any] = {
        "a": str(a.where.given), "b": str(b.where.given),
        "config": _changes(a.config, b.config),
        "config_compared": a.config is not None and b.config is not None,
        "manifest": _changes(flatten(manifest_a), flatten(manifest_b)) if a.manifest and b.manifest else [],
        "files": files,
        "metrics": _metric_rows(a, b),
        "size": {"a": a.bytes, "b": b.bytes, "ratio": round(b.bytes / a.bytes, 4) if a.bytes else None},
        "gate": {"a": _gate(a), "b": _gate(b)},
        "provenance": _changes(flatten((a.manifest or {}).get("provenance", {})),
                               flatten((b.manifest or {}).get("provenance", {}))),
    }
    result["identical"] = not (result["config"] or result["manifest"] or files["added"] or files["removed"]
                               or files["changed"] or any(r["content"] for r in result["metrics"]))
    if measure:
        result["measured"] = _measure(a, b, text, repeats)
    return result


def _gate(side: Side) -> dict[str, Any] | None:
    """The side's own regression-gate verdict (baseline, passed, failures), None when it had none."""
    record = ((side.manifest or {}).get("metrics") or {}).get(GATE)
    if not isinstance(record, dict):
        return None
    return {k: record.get(k) for k in ("baseline", "passed", "failures")}


def _measure(a: Side, b: Side, text: str | None, repeats: int) -> dict[str, Any]:
    from ..runtime.compare import measure_pair
    from .gate import Tolerances, gate_rows

    if a.manifest is None or b.manifest is None:
        raise SlmcError("--measure needs two bundles; a run folder without bundle/ has nothing to run",
                        where="--measure", fix="compile both runs to a bundle first")
    if text is None:
        for side in (a, b):
            heldout = side.where.run / LAYOUT.heldout_text if side.where.run else None
            if heldout is not None and heldout.is_file():
                text = heldout.read_text(encoding="utf-8")
                break
    if text is None:
        raise SlmcError("--measure needs a text for perplexity: neither side is in a run folder with "
                        f"{LAYOUT.heldout_text}", where="--measure", fix="pass --text FILE")
    from ..runtime.errors import SlmcRuntimeError
    from ..stages.base import EVAL_WINDOW, HELDOUT_EVAL_TOKENS

    try:
        measured = measure_pair(a.where.bundle, b.where.bundle, text, repeats=repeats,
                                max_eval_tokens=HELDOUT_EVAL_TOKENS, window=EVAL_WINDOW)
    except SlmcRuntimeError as exc:  # a tampered bundle, an empty text: the runtime says what and where
        raise SlmcError(exc.message, where=exc.where, fix=exc.fix) from None
    comparable = a.files.get("tokenizer.json") == b.files.get("tokenizer.json")
    measured["rows"] = gate_rows(measured, Tolerances(), comparable=comparable)
    measured["comparable"] = comparable
    return measured
