"""The gate stage: the new bundle against `targets.baseline`, measured side by side after packaging.

Both bundles are loaded in this process and measured interleaved on this run's held-out text
(`slmc.runtime.compare`), with task accuracy where `eval.tasks` lists task files and task
evaluation is installed (`slmc.runtime.tasks.evaluate_bundle`). The verdict and the table go
into the bundle's manifest (`metrics.regression_gate`, re-stamped) and report.md whether the
gate passes or not; the pipeline turns a failed verdict into exit code 3 after the report is
written (errors.GateFailed), so the bundle and its report stay for inspection.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import writer
from ..compare.gate import Tolerances, failures, gate_rows, table_text
from ..compare.locate import locate
from ..errors import StageError
from ..layout import LAYOUT
from .base import EVAL_WINDOW, HELDOUT_EVAL_TOKENS, Results
from .progress import say, step
from .results import GateResult

MANIFEST_KEY = "regression_gate"


def task_paths(cfg) -> tuple[str, ...]:
    """eval.tasks where this slmc has the field (task evaluation is a separate feature), else ()."""
    return tuple(getattr(getattr(cfg, "eval", None), "tasks", None) or ())


def task_accuracy(cfg, folders: dict[str, Path]) -> tuple[dict[str, Any] | None, str | None]:
    """({"baseline": acc, "candidate": acc, "tasks": {...}}, note): None without tasks or their evaluator."""
    paths = task_paths(cfg)
    if not paths:
        return None, None
    try:
        from ..runtime.tasks import evaluate_bundle
    except ImportError:
        return None, "eval.tasks is set but this slmc has no task evaluation (slmc.runtime.tasks)"
    out: dict[str, Any] = {"tasks": {}}
    for side, folder in folders.items():
        with step(f"task accuracy of the {side} ({len(paths)} task file(s))"):
            result = evaluate_bundle(folder, list(paths))
        out[side] = result["accuracy"]
        out["tasks"][side] = result["tasks"]
    return out, None


def _tokenizer_hash(manifest: dict) -> str | None:
    return manifest["hashes"].get(manifest["files"]["tokenizer"])


def run_gate(cfg, run_dir: Path, results: Results) -> GateResult:
    from ..runtime.compare import measure_pair
    from ..runtime.manifest import manifest_json, read_manifest

    found = locate(cfg.targets.baseline)
    if found.bundle is None:  # checked by targets.baseline_bundle; the folder may have gone since
        raise StageError(f"{cfg.targets.baseline} is no longer a bundle", where="targets.baseline",
                         fix="restore the baseline bundle or point targets.baseline at another")
    candidate = run_dir / LAYOUT.bundle
    manifest, base_manifest = read_manifest(candidate), read_manifest(found.bundle)
    comparable = _tokenizer_hash(manifest) == _tokenizer_hash(base_manifest)
    text = (run_dir / LAYOUT.heldout_text).read_text(encoding="utf-8")
    with step(f"measuring {candidate.parent.name} and the baseline {found.bundle} side by side"):
        measured = measure_pair(found.bundle, candidate, text, max_eval_tokens=HELDOUT_EVAL_TOKENS,
                                window=EVAL_WINDOW)  # the per-stage evaluations' tokens and window
    accuracy, note = task_accuracy(cfg, {"baseline": found.bundle, "candidate": candidate}) if comparable else (None, None)
    rows = gate_rows(measured, Tolerances.from_targets(cfg.targets), accuracy, comparable=comparable)
    failed = failures(rows)
    if not comparable:
        failed.insert(0, "not comparable: the bundles' tokenizer.json differ, so perplexity and tasks are not "
                         "measured; compile with the baseline's tokenizer (data.tokenizer=<baseline>/tokenizer.json)")
    record = {"baseline": str(found.bundle), "baseline_name": base_manifest["name"],
              "baseline_precision": base_manifest["precision"], "passed": not failed, "failures": failed,
              "rows": rows, "measured": measured, "tasks": accuracy, "note": note,
              "tolerances": Tolerances.from_targets(cfg.targets).__dict__}
    updated = json.loads(json.dumps(manifest))
    updated.pop("manifest_sha256", None)
    updated["metrics"][MANIFEST_KEY] = record
    writer.write_text(candidate, "manifest.json", manifest_json(updated))  # re-stamped; the hashes are unchanged
    from rich.markup import escape

    # A failed gate's table is printed by the error (errors.GateFailed), also when the compile is quiet.
    say(escape(f"regression gate against {found.bundle}: " + ("passed\n" + table_text(rows) if not failed
                                                               else "FAILED (the table follows)")))
    return GateResult(passed=not failed, baseline=str(found.bundle), failures=failed, rows=rows)
