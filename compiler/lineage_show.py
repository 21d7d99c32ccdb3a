"""`slmc lineage <bundle or run folder>`: the chain of runs back to the first checkpoint.

A bundle answers from its verified manifest alone (a device has no run folders); a run folder
answers from its bundle when it packaged one, else from its plan.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .layout import LAYOUT
from .lineage import chain, from_plan
from .runs import is_run_folder


def lineage_of(path: str | Path) -> list[dict[str, Any]]:
    """The chain of `path` (a bundle or a run folder), newest first; ConfigError when it has none."""
    from .runtime.errors import BundleError
    from .runtime.manifest import MANIFEST_NAME, read_manifest

    folder = Path(path).expanduser().resolve()
    bundle = folder if (folder / MANIFEST_NAME).is_file() else folder / LAYOUT.bundle
    if (bundle / MANIFEST_NAME).is_file():
        try:
            manifest = read_manifest(bundle)
        except BundleError as exc:
            raise ConfigError(exc.message, where=exc.where, fix=exc.fix) from None
        record = (manifest.get("provenance") or {}).get("lineage")
        if not isinstance(record, dict):
            raise ConfigError("the bundle records no lineage (packaged by an slmc before lineage existed)",
                              where=str(bundle / MANIFEST_NAME), fix="re-compile it to record one")
        runs = list(chain(record))
        runs[0]["manifest_sha256"] = manifest.get("manifest_sha256")
        if is_run_folder(bundle.parent):
            runs[0]["run_dir"] = str(bundle.parent)
        return runs
    record = from_plan(folder) if is_run_folder(folder) else None
    if record is None:
        raise ConfigError(f"{folder} is neither a bundle (manifest.json) nor an slmc run folder with lineage "
                          "in plan.json", where=str(folder), fix="pass a bundle folder or generated/<run>")
    runs = list(chain(record))
    runs[0]["run_dir"] = str(folder)
    return runs


def describe_init(init: Any) -> str:
    """'from run X', 'Hub org/model@abc123', 'local /path', 'scratch (model tiny)'; a distilled
    student adds its teacher: 'scratch (model tiny), distilled from run X v2'."""
    if not isinstance(init, dict):
        return "unknown"
    started = _describe_source(init)
    teacher = init.get("teacher")
    if isinstance(teacher, dict):
        taught = _describe_source(teacher).removeprefix("from ")
        version = f" v{teacher['version']}" if teacher.get("kind") == "run" and teacher.get("version") else ""
        started += f", distilled from {taught}{version}"
    return started


def _describe_source(init: dict) -> str:
    kind = init.get("kind")
    if kind == "run":
        return f"from run {init.get('run')}"
    if kind == "hub":
        return f"Hub {init.get('hub')}@{str(init.get('revision'))[:12]}"
    if kind == "scratch":
        return f"scratch (model {init.get('model')})"
    if kind == "local":
        return f"local checkpoint {init.get('path') or '(path not recorded in the bundle)'}"
    return f"init={kind} {init.get('path') or ''}".rstrip()


def print_lineage(path: str, *, as_json: bool = False) -> int:
    runs = lineage_of(path)
    if as_json:
        print(json.dumps({"chain": runs}, indent=2))
        return 0
    print(f"lineage of {path}: {len(runs)} run(s), newest first")
    short = lambda h: str(h)[:12] if h else "-"  # noqa: E731
    rows = [(f"v{r.get('version') or '?'}", str(r.get("run_name")), short(r.get("config_sha256")),
             short(r.get("manifest_sha256")), describe_init(r.get("init"))) for r in runs]
    header = ("version", "run", "config", "manifest", "started from")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0
