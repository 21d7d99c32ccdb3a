"""Task accuracy in a compile: the checkpoint and the bundle measured, recorded in metrics.jsonl, the
manifest and report.md; compress.max_accuracy_drop fails the compile (and publishes no bundle)."""

from __future__ import annotations

import json

import pytest

from slmc.errors import StageError
from slmc.load import load_config
from slmc.pipeline import compile_config

FAST = ["train.max_steps=40", "train.batch_size=8", "train.seq_len=64", "train.eval_every=20",
        "train.save_every=20", "train.warmup_steps=5", "export.max_seq_len=128", "generation.max_new_tokens=32"]


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("generated")


def compile_run(out_dir, *overrides):
    return compile_config(load_config([*FAST, f"out_dir={out_dir}", *overrides]))


@pytest.fixture(scope="module")
def fp32_run(out_dir):
    # the default task file of data=builtin, and a gate of 0: an fp32 bundle must score as its checkpoint
    return compile_run(out_dir, "compress.max_accuracy_drop=0")


def test_default_compile_measures_the_shipped_task_on_checkpoint_and_bundle(fp32_run):
    run = fp32_run.run_dir
    manifest = json.loads((run / "bundle" / "manifest.json").read_text())
    tasks = manifest["metrics"]["tasks"]
    checkpoint, bundle = tasks["checkpoint"], tasks["bundle"]
    assert checkpoint["measured_with"] == "torch" and bundle["measured_with"] == "onnxruntime"
    entry = bundle["tasks"]["stdlib_completion"]
    assert entry["metric"] == "acc" and entry["n"] >= 20 and entry["file"] == "stdlib_completion.jsonl"
    assert 0.0 <= entry["accuracy"] <= 1.0 and "acc_norm" in entry
    assert bundle["accuracy"] == checkpoint["accuracy"] and tasks["accuracy_drop"] == 0.0
    assert "/" not in json.dumps(tasks).replace("stdlib_completion.jsonl", "")  # no local paths ship

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    task_records = [r for r in records if r.get("event") == "task_eval"]
    assert [(r["stage"], r["measured_with"], r["precision"]) for r in task_records] == [
        ("train", "torch", "fp32"), ("package", "onnxruntime", "fp32")]
    assert task_records[1]["accuracy"] == bundle["accuracy"]

    report = (run / "report.md").read_text()
    assert "## Task accuracy" in report and "| stdlib_completion | acc |" in report
    assert "max_accuracy_drop" in report


def test_the_accuracy_gate_fails_the_compile_by_how_much(out_dir, fp32_run, monkeypatch):
    """The bundle (here made to lose a quarter of its accuracy) is never published past the gate."""
    import slmc.runtime.tasks as runtime_tasks

    real = runtime_tasks.evaluate_bundle

    def worse(*args, **kwargs):
        result = real(*args, **kwargs)
        for entry in result["tasks"].values():
            entry["accuracy"] = round(entry["accuracy"] - 0.25, 4)
        result["accuracy"] = round(result["accuracy"] - 0.25, 4)
        return result

    monkeypatch.setattr(runtime_tasks, "evaluate_bundle", worse)
    passed = compile_run(out_dir, "run_name=gated", "compress.max_accuracy_drop=0.3")  # within a loose gate
    manifest = passed.run_dir / "bundle" / "manifest.json"
    assert json.loads(manifest.read_text())["metrics"]["tasks"]["accuracy_drop"] == 0.25
    before = manifest.read_bytes()
    with pytest.raises(StageError) as err:
        compile_run(out_dir, "run_name=gated", "compress.max_accuracy_drop=0.1")
    text = err.value.render()
    assert "compress.max_accuracy_drop" in text and "fell 25.0%" in text and "by 15.0%" in text
    assert manifest.read_bytes() == before  # the refused bundle was never published: the previous one stays


def test_eval_tasks_empty_turns_task_evaluation_off(out_dir, fp32_run):
    summary = compile_run(out_dir, "eval.tasks=[]")
    manifest = json.loads((summary.run_dir / "bundle" / "manifest.json").read_text())
    assert "tasks" not in manifest["metrics"]
    assert "task_eval" not in (summary.run_dir / "metrics.jsonl").read_text()
