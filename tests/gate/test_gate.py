"""The regression gate: an int8 bundle against its fp32 baseline, passing with loose tolerances and
failing with exit code 3 (table printed) with a tight one; the verdict in the manifest and report.md."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest

from slmc.cli import main
from slmc.stages.base import Results
from slmc.stages.gate import run_gate

from .conftest import FAST, LOOSE


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _rows(gate: dict) -> dict[str, dict]:
    return {r["metric"]: r for r in gate["rows"]}


def test_loose_tolerances_pass_and_the_table_is_in_manifest_and_report(int8_run, fp32_run):
    gate = int8_run.stages["gate"]
    assert gate.passed and gate.failures == []
    record = _manifest(int8_run.bundle)["metrics"]["regression_gate"]
    assert record["passed"] and record["baseline"] == str(fp32_run.bundle)
    base, cand = record["measured"]["baseline"], record["measured"]["candidate"]
    assert (base["precision"], cand["precision"]) == ("fp32", "int8")
    # Both measured here: perplexities close (int8 of a tiny model), the int8 bundle smaller.
    assert 0 < base["perplexity"] and abs(cand["perplexity"] / base["perplexity"] - 1) < 0.5
    assert cand["bytes"] < base["bytes"]
    assert base["decode_tokens_per_s"] > 0 and cand["decode_tokens_per_s"] > 0 and cand["prefill_ms"] > 0
    assert base["eval_tokens"] == cand["eval_tokens"] > 100  # the same text, the same tokenizer
    assert base["peak_memory_mb"] > 0 and cand["peak_memory_mb"] > 0  # a probe process per bundle (Linux)
    rows = _rows(record)
    assert rows["decode tokens/s"]["verdict"] == "ok" and rows["prefill ms"]["verdict"] == "—"
    report = (int8_run.run_dir / "report.md").read_text()
    assert "## Regression gate" in report and "**passed**" in report and "held-out perplexity" in report
    # The re-stamped manifest still verifies (the bundle a device gets).
    from slmc.runtime import verify_bundle

    verify_bundle(int8_run.bundle)


def test_tight_tolerance_fails_with_exit_3_and_prints_the_table(out_dir, fp32_run, int8_run, capsys):
    code = main(["compile", *FAST, f"out_dir={out_dir}", "compress=int8", f"targets.baseline={fp32_run.bundle}",
                 *LOOSE[:1], "targets.min_speed_ratio=100"])
    err = capsys.readouterr().err
    assert code == 3
    assert "regression gate failed" in err and "| decode tokens/s |" in err and "FAIL" in err
    assert "≥ ×100" in err
    run = next(p for p in out_dir.glob("tiny-*") if p / "bundle" != int8_run.bundle and
               _manifest(p / "bundle")["metrics"].get("regression_gate", {}).get("passed") is False)
    record = _manifest(run / "bundle")["metrics"]["regression_gate"]
    assert [r["metric"] for r in record["rows"] if r["verdict"] == "FAIL"] == ["decode tokens/s"]
    report = (run / "report.md").read_text()
    assert "**FAILED**" in report and "decode tokens/s" in report


@pytest.fixture
def tasks_stand_in(monkeypatch):
    """slmc.runtime.tasks as the task-evaluation feature will provide it: accuracy 0.75 for fp32, 0.5 below."""
    calls = []

    def evaluate_bundle(bundle_dir, task_paths, *, chat=None):
        precision = json.loads((Path(bundle_dir) / "manifest.json").read_text())["precision"]
        calls.append((Path(bundle_dir), list(task_paths)))
        accuracy = 0.75 if precision == "fp32" else 0.5
        return {"tasks": {"qa": {"accuracy": accuracy}}, "accuracy": accuracy}

    module = types.ModuleType("slmc.runtime.tasks")
    module.evaluate_bundle = evaluate_bundle
    monkeypatch.setitem(sys.modules, "slmc.runtime.tasks", module)
    return calls


@pytest.mark.parametrize("max_drop, passed", [(0.1, False), (0.3, True)])
def test_task_accuracy_is_gated_where_eval_tasks_exist(int8_run, fp32_run, tasks_stand_in, tmp_path, max_drop, passed):
    run = _copy_run(int8_run, tmp_path)
    cfg = load_cfg(fp32_run, max_drop)
    gate = run_gate(types.SimpleNamespace(targets=cfg.targets, eval=types.SimpleNamespace(tasks=["qa.jsonl"])),
                    run, Results())
    assert [c[0] for c in tasks_stand_in] == [fp32_run.bundle, run / "bundle"]
    assert all(c[1] == ["qa.jsonl"] for c in tasks_stand_in)
    row = _rows({"rows": gate.rows})["task accuracy"]
    assert (row["baseline"], row["candidate"]) == (0.75, 0.5)
    assert gate.passed is passed and row["verdict"] == ("ok" if passed else "FAIL")
    record = _manifest(run / "bundle")["metrics"]["regression_gate"]
    assert record["tasks"]["tasks"]["candidate"] == {"qa": {"accuracy": 0.5}}


def _copy_run(compiled, tmp_path: Path) -> Path:
    """The bundle and held-out text of a compiled run, copied: a gate run here rewrites the candidate's manifest."""
    run = tmp_path / "run"
    shutil.copytree(compiled.run_dir / "bundle", run / "bundle")
    shutil.copytree(compiled.run_dir / "data", run / "data")
    return run


def test_another_tokenizer_found_after_packaging_fails_as_not_comparable(int8_run, fp32_run, tmp_path,
                                                                        rewrite_manifest):
    """A scratch run's trained tokenizer exists only after its stage: the gate compares the two files' hashes."""
    from slmc.load import load_config

    baseline = Path(shutil.copytree(fp32_run.bundle, tmp_path / "baseline"))
    tokenizer = baseline / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text() + "\n")  # other bytes (re-hashed: a valid bundle)
    rewrite_manifest(baseline, lambda m: None)
    cfg = load_config([f"targets.baseline={baseline}", "targets.max_ppl_increase=1.0"])
    gate = run_gate(cfg, _copy_run(int8_run, tmp_path), Results())
    assert not gate.passed and gate.failures[0].startswith("not comparable: the bundles' tokenizer.json differ")
    assert "held-out perplexity" not in {r["metric"] for r in gate.rows}
    assert {r["metric"] for r in gate.rows} >= {"decode tokens/s", "bundle size"}


def load_cfg(fp32_run, max_drop: float):
    from slmc.load import load_config

    return load_config([f"targets.baseline={fp32_run.bundle}", f"targets.max_accuracy_drop={max_drop}"])


def test_without_tasks_no_accuracy_row(int8_run):
    assert "task accuracy" not in {r["metric"] for r in int8_run.stages["gate"].rows}
