"""Task accuracy as metrics.jsonl records and as the report's table, from a package result or a manifest."""

from __future__ import annotations

import json

from slmc.load import load_config
from slmc.report import task_summary
from slmc.stages.base import Results
from slmc.stages.results import PackageResult
from slmc.stages.stage_eval import is_stage_record, task_records


def measured(checkpoint: float, bundle: float) -> dict:
    def one(accuracy, measured_with):
        return {"tasks": {"mc": {"kind": "choice", "metric": "acc", "accuracy": accuracy, "acc_norm": 0.5, "n": 8,
                                 "file": "mc.jsonl"}},
                "accuracy": accuracy, "measured_with": measured_with, "chat": False}
    return {"checkpoint": one(checkpoint, "torch"), "bundle": one(bundle, "onnxruntime"),
            "accuracy_drop": round(checkpoint - bundle, 4), "max_accuracy_drop": 0.05, "precision": "int4"}


def test_records_for_checkpoint_and_bundle_are_rewritten_like_stage_records():
    cfg = load_config(["compress=int4"])
    results = Results()
    results.add("package", PackageResult(bundle="bundle", bytes=1, files={"model.onnx": 1},
                                         tasks=measured(0.75, 0.625)))
    train, package = task_records(cfg, results)
    assert (train["stage"], train["measured_with"], train["precision"], train["accuracy"]) == ("train", "torch",
                                                                                               "fp32", 0.75)
    assert (package["stage"], package["measured_with"], package["precision"], package["accuracy"]) == (
        "package", "onnxruntime", "int4", 0.625)
    assert all(is_stage_record(json.dumps(r)) for r in (train, package))  # a rerun replaces, never appends
    assert task_records(cfg, Results()) == []


def test_report_table_from_a_manifest_alone():
    summary = task_summary(Results(), {"metrics": {"tasks": measured(0.75, 0.625)}})
    (row,) = summary["rows"]
    assert (row["task"], row["checkpoint"], row["bundle"], row["change"]) == ("mc", "75.0%", "62.5%", "-12.5 points")
    assert summary["gate"] == "5 points" and summary["precision"] == "int4"
    assert task_summary(Results(), {"metrics": {}}) is None
