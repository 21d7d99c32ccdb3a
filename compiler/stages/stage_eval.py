"""Per-stage held-out perplexity, as records in the run's metrics.jsonl.

train.py writes its training records (`{"step": ..., "loss": ..., "eval_ppl": ...}`) there;
the compile adds one record per stage that changed the weights, all measured on the same
held-out tokens with the same window (`deploy.heldout_tokens`, `base.EVAL_WINDOW`):

    {"event": "stage_eval", "stage": "compress", "heldout_ppl": 132.05, "model": "work/compress/model.onnx",
     "measured_with": "onnxruntime", "heldout_tokens": 8192, "window": 128}

The numbers come from the stage results' evaluations (a stage restored from the cache brings its own),
and the records are rewritten, never appended again: a rerun that reuses every stage leaves
the file as it was. They carry no "step", so readers of training records skip them.

Task accuracy (eval.tasks, stages.task_eval) is recorded the same way, one record for the checkpoint
(stage "train", PyTorch) and one for the bundle (stage "package", slmc.runtime):

    {"event": "task_eval", "stage": "package", "model": "bundle", "measured_with": "onnxruntime",
     "precision": "int4", "accuracy": 0.65, "tasks": {"stdlib_completion": {"metric": "acc", ...}}}
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import writer
from ..layout import LAYOUT
from .base import EVAL_WINDOW, Results

EVENT = "stage_eval"
TASK_EVENT = "task_eval"


def stage_records(cfg, results: Results) -> list[dict]:
    """One record per weight-changing stage in `results` (each result's evaluations), in lifecycle order."""
    from .registry import EXPORT

    common = {"window": min(EVAL_WINDOW, cfg.export.max_seq_len)}
    export = results.get(EXPORT)
    if export is not None:
        common["heldout_tokens"] = export.heldout_eval_tokens
    return [{"event": EVENT, "stage": e.record_as, "heldout_ppl": _round(e.ppl), "model": e.model,
             "measured_with": e.measured_with, **e.extra, **common}
            for e in results.evaluations() if e.record_as is not None and e.ppl is not None]


def task_records(cfg, results: Results) -> list[dict]:
    """The checkpoint's and the bundle's task accuracy, when the package stage measured them."""
    from .registry import PACKAGE

    tasks = getattr(results.get(PACKAGE), "tasks", None)
    if not tasks:
        return []
    measured = (("train", LAYOUT.final_checkpoint, "fp32", tasks["checkpoint"]),
                ("package", LAYOUT.bundle, cfg.compress.precision, tasks["bundle"]))
    return [{"event": TASK_EVENT, "stage": stage, "model": model, "measured_with": m["measured_with"],
             "precision": precision, "accuracy": m["accuracy"], "tasks": m["tasks"]}
            for stage, model, precision, m in measured]


def _round(value):
    return None if value is None else round(float(value), 4)


def is_stage_record(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False  # a line cut short by a killed run stays as it is
    return isinstance(record, dict) and record.get("event") in (EVENT, TASK_EVENT)


def record_stage_evals(cfg, run_dir: Path, results: Results) -> None:
    """Rewrite the stage records of run_dir/metrics.jsonl from `results` (training lines kept).

    Nothing is written before train.py has created the file: it starts a fresh run with an
    empty one, so the records of stages before training (prune) are written after it.
    """
    path = run_dir / LAYOUT.metrics
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and not is_stage_record(line)]
    lines = kept + [json.dumps(r) for r in stage_records(cfg, results) + task_records(cfg, results)]
    writer.write_text(run_dir, LAYOUT.metrics, "".join(line + "\n" for line in lines))
