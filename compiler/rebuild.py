"""`slmc compile --from <run folder>`: compile an earlier run's resolved config again and say what changed.

The config is the run's config.yaml exactly (its provenance section aside), compiled into
`<run>-rebuild` beside it (or `out_dir/run_name` when given) with the stage cache off: a cached
stage would copy the earlier outputs and prove nothing. rebuild.json in the new run folder then
lists, per bundle file, identical or different by the sha256 of both manifests; the manifest's own
fields that differ; the package versions that differ; and, walking the plan's stages in order,
the first stage whose outputs differ, which is where nondeterminism (or a version change) entered.
docs/lineage.md, "Reproducible rebuilds".
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError
from .layout import LAYOUT
from .runs import is_run_folder

REPORT = "rebuild.json"
BUILD_KEYS = ("provenance.created", "metrics.stage_seconds")
"""Manifest fields that describe one build (when, how long) and differ on every build by design."""
LOG_OUTPUTS = (LAYOUT.metrics,)
"""Stage outputs that log wall-clock times: listed, never taken as a sign of nondeterminism."""
ALLOWED_OVERRIDES = ("run_name", "out_dir")


def load_run_config(run: Path):
    """The SlmcConfig of an earlier run: its config.yaml without the provenance section."""
    import yaml

    from .load import validate

    path = run / LAYOUT.config
    if not is_run_folder(run):
        raise ConfigError(f"{run} is not an slmc run folder (no {LAYOUT.config} and {LAYOUT.plan})", where="--from",
                          fix="pass a folder that `slmc compile` wrote, e.g. generated/<run>")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", where="--from", fix="restore the run's config.yaml") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a mapping", where="--from", fix="restore the run's config.yaml")
    data.pop("provenance", None)
    return validate(data)


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """run_name=... and out_dir=... only: anything else would no longer rebuild the earlier config."""
    found = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in ALLOWED_OVERRIDES:
            raise ConfigError(f"{item!r} cannot be given with --from: a rebuild compiles the earlier run's config "
                              "exactly", where="--from",
                              fix="give only run_name=NAME and/or out_dir=DIR, or compile a new config without --from")
        found[key] = value
    return found


def rebuild(run: str | Path, overrides: list[str] = (), *, quiet: bool = False):
    """Compile `run`'s config again; returns (CompileResult, report dict). The report is in rebuild.json."""
    from . import writer
    from .pipeline import compile_config

    source = Path(run).expanduser().resolve()
    cfg = load_run_config(source)
    changes = parse_overrides(list(overrides))
    if changes:
        cfg = _with(cfg, changes)
        target = None  # out_dir/run_name, as any compile
    else:
        target = source.parent / f"{source.name}-rebuild"
    result = compile_config(cfg, use_cache=False, quiet=quiet, run_dir=target)
    report = compare_runs(source, result.run_dir, result.plan)
    writer.write_files(result.run_dir, {REPORT: json.dumps(report, indent=2) + "\n"})
    if not quiet:
        print_report(report)
    return result, report


def _with(cfg, changes: dict[str, str]):
    from .load import validate

    return validate({**cfg.model_dump(mode="json"), **changes})


# -- comparing --------------------------------------------------------------


def compare_runs(original: Path, rebuilt: Path, plan) -> dict[str, Any]:
    """What differs between two run folders of one config: bundle files, manifest fields, stage outputs."""
    from .runtime.manifest import MANIFEST_NAME

    old = _manifest(original / LAYOUT.bundle / MANIFEST_NAME)
    new = _manifest(rebuilt / LAYOUT.bundle / MANIFEST_NAME)
    versions = _versions(old, new)
    stages = _stage_outputs(original, rebuilt, plan)
    first = next((s["stage"] for s in stages if s["differs"]), None)
    fields = _fields(old, new)
    files = _files(old, new, plan, versions, first, [f["field"] for f in fields if f["kind"] == "build"])
    content_fields = [f for f in fields if f["kind"] != "build"]
    return {
        "original": str(original), "rebuilt": str(rebuilt),
        "byte_identical": not files_differ(files) and not fields,
        "content_identical": not files_differ(files) and not content_fields,
        "files": files, "manifest_fields": fields, "versions": versions,
        "stages": stages, "first_differing_stage": first,
    }


def files_differ(files: list[dict]) -> bool:
    return any(f["status"] != "identical" for f in files)


def _manifest(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", where="--from",
                          fix="rebuild a run that packaged a bundle (its compile finished)") from None


def _versions(old: Mapping, new: Mapping) -> dict[str, list]:
    """package -> [original, rebuilt] for every version that differs (slmc, python, torch, ...)."""
    a = (old.get("provenance") or {}).get("versions") or {}
    b = (new.get("provenance") or {}).get("versions") or {}
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _producer(name: str, plan) -> str:
    """The stage that wrote a bundle file: the graph's last stage, the tokenizer stage, or package."""
    if name.startswith("model.onnx"):
        graph = [s.name for s in plan.stages if any(p.endswith("model.onnx") for p in s.produces)]
        return graph[-1] if graph else "export"
    if name.startswith("tokenizer"):
        return "tokenizer"
    return "package"


def _files(old: Mapping, new: Mapping, plan, versions: dict, first: str | None, build: list[str]) -> list[dict]:
    a, b = old.get("hashes") or {}, new.get("hashes") or {}
    rows = []
    for name in sorted(set(a) | set(b)):
        status = ("added" if name not in a else "removed" if name not in b
                  else "identical" if a[name] == b[name] else "different")
        row = {"file": name, "status": status, "original_sha256": a.get(name), "rebuilt_sha256": b.get(name),
               "produced_by": _producer(name, plan)}
        if status != "identical":
            row["why"] = _why(row["produced_by"], versions, first, build)
        rows.append(row)
    return rows


def _why(stage: str, versions: dict, first: str | None, build: list[str]) -> str:
    if versions:
        changed = ", ".join(f"{k} {v[0]} -> {v[1]}" for k, v in versions.items())
        return f"package versions differ ({changed}); the {stage} stage may write differently under them"
    if first is not None:
        return (f"same slmc and package versions: nondeterminism entered at the {first} stage (its outputs "
                f"differ between the two runs) and reached this file through {stage}")
    if stage == "package" and "provenance.created" in build:
        return ("same versions and identical stage outputs: the package stage wrote it differently; it may "
                "embed a build-time field (provenance.created differs)")
    return f"same versions and identical stage outputs: the {stage} stage wrote it differently (nondeterministic)"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _fields(old: Mapping, new: Mapping) -> list[dict]:
    """Manifest fields (dotted) that differ, besides the hashes and the manifest's own checksum."""
    skip = ("hashes", "manifest_sha256")
    a = _flatten({k: v for k, v in old.items() if k not in skip})
    b = _flatten({k: v for k, v in new.items() if k not in skip})
    rows = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            kind = ("build" if key.startswith(BUILD_KEYS) else
                    "versions" if key.startswith("provenance.versions") else "content")
            rows.append({"field": key, "original": a.get(key), "rebuilt": b.get(key), "kind": kind})
    return rows


def _hash(path: Path) -> str | None:
    """sha256 over a file, or over a folder's files and their relative names; None when absent."""
    if not path.exists():
        return None
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _stage_outputs(original: Path, rebuilt: Path, plan) -> list[dict]:
    """Per planned stage: which of its outputs differ between the runs (logs of wall times aside)."""
    rows = []
    for stage in plan.stages:
        outputs = [p for p in stage.produces if not p.startswith(LAYOUT.bundle)]
        different = [p for p in outputs if _hash(original / p) != _hash(rebuilt / p)]
        rows.append({"stage": stage.name, "outputs": outputs, "different": different,
                     "differs": any(p not in LOG_OUTPUTS for p in different)})
    return rows


def print_report(report: Mapping[str, Any]) -> None:
    from rich.table import Table

    from .console import console

    table = Table()
    for column in ("bundle file", "status", "produced by", "why"):
        table.add_column(column)
    for row in report["files"]:
        table.add_row(row["file"], row["status"], row["produced_by"], row.get("why", ""))
    out = console()
    out.print(f"rebuild of {report['original']}\n        in {report['rebuilt']}", markup=False)
    out.print(table)
    for row in report["manifest_fields"]:
        out.print(f"manifest.json {row['field']} ({row['kind']}): {row['original']!r} -> {row['rebuilt']!r}",
                  markup=False)
    verdict = ("byte-identical" if report["byte_identical"] else
               "identical in content (manifest.json differs only in build time fields)" if report["content_identical"]
               else "different")
    first = report["first_differing_stage"]
    out.print(f"bundle: {verdict}" + (f"; first stage whose outputs differ: {first}" if first else ""), markup=False)
