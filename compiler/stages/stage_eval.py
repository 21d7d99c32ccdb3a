"""Per-stage held-out perplexity, as records in the run's metrics.jsonl.

train.py writes its training records (`{"step": ..., "loss": ..., "eval_ppl": ...}`) there;
the compile adds one record per stage that changed the weights, all measured on the same
held-out tokens with the same window (`deploy.heldout_tokens`, `deploy.EVAL_WINDOW`):

    {"event": "stage_eval", "stage": "compress", "heldout_ppl": 132.05, "model": "work/compress/model.onnx",
     "measured_with": "onnxruntime", "heldout_tokens": 8192, "window": 128}

The numbers come from the stage results (a stage restored from the cache brings its own),
and the records are rewritten, never appended again: a rerun that reuses every stage leaves
the file as it was. They carry no "step", so readers of training records skip them.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import writer
from ..layout import LAYOUT

EVENT = "stage_eval"


def stage_records(cfg, results: dict) -> list[dict]:
    """One record per weight-changing stage in `results`, in lifecycle order."""
    from .deploy import EVAL_WINDOW

    common = {"window": min(EVAL_WINDOW, cfg.export.max_seq_len)}
    if "export" in results:
        common["heldout_tokens"] = results["export"].get("heldout_eval_tokens")
    found = []
    prune = results.get("prune")
    if prune and prune.get("heldout_ppl_after") is not None:
        found.append(_record("prune", prune["heldout_ppl_after"], LAYOUT.init_checkpoint, "torch",
                             heldout_ppl_before=_round(prune.get("heldout_ppl_before"))))
    export = results.get("export")
    if export:
        found.append(_record("train", export.get("checkpoint_ppl"), LAYOUT.final_checkpoint, "torch"))
        found.append(_record("export", export.get("heldout_ppl"), export.get("onnx"), "onnxruntime"))
    for name in ("optimize", "compress"):
        result = results.get(name) or {}
        if (result.get("report") or {}).get("format") == "builder-flag":
            continue  # the graph is unchanged: TensorRT applies fp16/bf16 when the engine is built
        if result.get("heldout_ppl") is not None:
            found.append(_record(name, result["heldout_ppl"], result.get("onnx"), "onnxruntime"))
    return [{**r, **common} for r in found if r["heldout_ppl"] is not None]


def _record(stage: str, ppl, model: str | None, measured_with: str, **extra) -> dict:
    return {"event": EVENT, "stage": stage, "heldout_ppl": _round(ppl), "model": model,
            "measured_with": measured_with, **extra}


def _round(value):
    return None if value is None else round(float(value), 4)


def is_stage_record(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False  # a line cut short by a killed run stays as it is
    return isinstance(record, dict) and record.get("event") == EVENT


def record_stage_evals(cfg, run_dir: Path, results: dict) -> None:
    """Rewrite the stage records of run_dir/metrics.jsonl from `results` (training lines kept).

    Nothing is written before train.py has created the file: it starts a fresh run with an
    empty one, so the records of stages before training (prune) are written after it.
    """
    path = run_dir / LAYOUT.metrics
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and not is_stage_record(line)]
    lines = kept + [json.dumps(r) for r in stage_records(cfg, results)]
    writer.write_text(run_dir, LAYOUT.metrics, "".join(line + "\n" for line in lines))
