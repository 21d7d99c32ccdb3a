"""The per-run report: numbers land in report.md, partial runs render, loss.png is deterministic.

Run folders are built by hand in tmp_path (the real config.yaml and plan.json of a
config; metrics, results and a manifest with plausible values); nothing is trained.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slmc.estimate import Arch
from slmc.load import load_config
from slmc.pipeline import check_and_plan, resolved_config_yaml
from slmc.report import LOSS_PLOT, decode_bound, read_config, read_metrics, write_run_report
from slmc.runtime.manifest import manifest_json, with_hashes
from slmc.stages.base import Results
from slmc.stages.registry import result_type

PPL = {"checkpoint": 12.0, "export": 12.000001, "compress": 12.3}
PARITY = {"cases": {"decode_with_past": 9.5367431640625e-07, "prefill": 1.9e-06}, "greedy_identical": True,
          "ok": True, "tolerance": 0.001}
SHIPPED = {"stage": "compress", "precision": "int4", "reference": "fp32 checkpoint (PyTorch)",
           "execution_provider": "CPUExecutionProvider", "greedy_identical": False,
           "greedy": {"prompts": 4, "tokens": 64, "agree": 45, "first_divergence": [None, 5, None, 8],
                      "reference": [], "graph": []},
           "max_abs_logit_diff": 0.8312, "cases": {"prefill": 0.8312}, "top1_agreement": 0.96875,
           "heldout_perplexity": PPL["compress"], "note": None, "tolerance": 0.001, "ok": False}
METRICS = [
    {"step": 0, "eval_ppl": 4086.9, "elapsed": 0.0},
    {"step": 5, "loss": 8.3150, "lr": 1e-3, "tokens_per_s": 700.0, "elapsed": 3.1},
    {"step": 10, "loss": 7.9, "lr": 2e-3, "tokens_per_s": 650.0, "eval_ppl": 2733.2, "elapsed": 6.0},
    {"step": 15, "loss": 7.4364, "lr": 3e-3, "tokens_per_s": 640.0, "elapsed": 9.2},
    {"step": 20, "loss": 6.8, "lr": 3e-3, "tokens_per_s": 660.0, "eval_ppl": 1593.3, "elapsed": 12.4},
]


def make_run(root: Path, overrides: list[str], *, metrics: list[dict] | None = None,
             manifest_ppl: dict | None = None, model_bytes: int = 0,
             shipped: dict | None = SHIPPED) -> tuple[Path, object]:
    """A run folder as compile leaves it: config.yaml and plan.json (real), metrics.jsonl, and a
    bundle (a model file of `model_bytes` and a manifest) when `manifest_ppl` is given."""
    checked = check_and_plan(load_config([*overrides, f"out_dir={root}"]))
    cfg, run = checked.cfg, checked.run_dir
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(resolved_config_yaml(cfg))
    (run / "plan.json").write_text(json.dumps(checked.plan.to_dict(), indent=2))
    if metrics is not None:
        (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    if manifest_ppl is not None:
        write_bundle(run, cfg, manifest_ppl, model_bytes, shipped)
    return run, cfg


def write_bundle(run: Path, cfg, ppl: dict, model_bytes: int, shipped: dict | None) -> None:
    """shipped None: a bundle from before the shipped graph was measured (parity is the export's)."""
    bundle = run / "bundle"
    bundle.mkdir()
    (bundle / "model.onnx").write_bytes(b"\0" * model_bytes)
    (bundle / "tokenizer.json").write_text('{"model": {"vocab": {}}}')
    trt = cfg.runtime.name == "tensorrt"
    parities = {"parity": PARITY} if shipped is None else {"parity": shipped, "export_parity": PARITY}
    metrics = {**parities, "heldout_perplexity": dict(ppl), "heldout_eval_tokens": 8192,
               "stage_seconds": {"data": 0.06, "tokenizer": 1.66, "train": 93.2, "export": 48.71}}
    if "compress" in ppl:
        metrics["compress"] = {"format": "MatMulNBits", "bytes_before": 5_660_000, "bytes_after": 3_300_000}
    manifest = {
        "schema_version": 1, "format": "slmc-bundle", "name": run.name,
        "device": {"name": cfg.device.name, "isa": cfg.device.isa, "arch": cfg.device.arch},
        "runtime": {"name": cfg.runtime.name, "version": "10.3" if trt else "1.32.0",
                    "execution_provider": "TensorrtExecutionProvider" if trt else cfg.device.ort_execution_provider},
        "precision": cfg.compress.precision,
        "model": {"architecture": "llama", "parameters": 1_311_872, "num_hidden_layers": 4, "hidden_size": 128},
        "limits": {"max_seq_len": cfg.export.max_seq_len, "max_batch_size": 1},
        "metrics": metrics,
        "provenance": {"config_sha256": "ab" * 32},
    }
    (bundle / "manifest.json").write_text(manifest_json(with_hashes(bundle, manifest)))


def typed(results: dict[str, dict]) -> Results:
    """Typed results, as execute() returns them, from {stage: fields}."""
    found = Results()
    for name, fields in results.items():
        found.add(name, result_type(name)(**fields))
    return found


EXPORT = {"onnx": "work/export/model.onnx", "checkpoint_ppl": PPL["checkpoint"], "heldout_ppl": PPL["export"],
          "heldout_eval_tokens": 8192, "nodes": 638, "opset": 18, "exporter": "dynamo", "parity": PARITY,
          "export_seconds": 40.0, "io": {}, "kv_cache": {}, "model": {}, "seconds": 48.71}


def full_results(*, train_cached: bool = False) -> Results:
    """What execute() returns for data -> ... -> package (int4 on ORT)."""
    return typed({
        "data": {"train_chars": 1_234_567, "heldout_chars": 45_678, "files": {}, "train_sha256": "0" * 64,
                 "seconds": 0.06},
        "tokenizer": {"source": "trained (byte-level BPE)", "vocab_size": 4096, "files": {}, "seconds": 1.66},
        "train": {"command": "python train.py", "first_loss": 8.315, "last_loss": 6.8, "final_eval_ppl": 1593.3,
                  "seconds": 93.2, "cached": train_cached},
        "export": EXPORT,
        "optimize": {"onnx": "work/optimize/model.onnx", "heldout_ppl": None, "kv_share_buffer": True,
                     "report": {"nodes_before": 400, "nodes_after": 380,
                                "transformer_fusions": {"SkipSimplifiedLayerNormalization": 8, "Attention": 0}},
                     "seconds": 0.95},
        "compress": {"onnx": "work/compress/model.onnx", "heldout_ppl": PPL["compress"],
                     "ppl_increase": PPL["compress"] / PPL["export"] - 1,
                     "report": {"format": "MatMulNBits", "bytes_before": 5_660_000, "bytes_after": 3_300_000},
                     "seconds": 1.97},
        "package": {"bundle": "bundle", "bytes": 123_456, "files": {"model.onnx": 100_000}, "seconds": 0.5},
    })


@pytest.fixture
def complete(tmp_path) -> tuple[Path, object]:
    return make_run(tmp_path, ["device=cpu", "compress=int4"], metrics=METRICS, manifest_ppl=PPL,
                    model_bytes=100_000)


def test_complete_run_reports_every_section(complete):
    run, cfg = complete
    text = write_run_report(run, full_results(train_cached=True)).read_text()
    assert text.startswith(f"# {run.name} — slmc run report")
    assert "| device | cpu (" in text and "| precision | int4 |" in text
    assert "| runtime | ort 1.32.0 (CPUExecutionProvider) |" in text
    assert "| version | 1 (`slmc lineage` shows the chain of runs) |" in text  # a first run: no parent
    assert "| started from | scratch (model tiny) |" in text
    # stages: status, seconds (a cached stage's original time in parentheses), key figures
    assert "| data | ran | 0.1 | 1,234,567 training / 45,678 held-out characters |" in text
    assert "| train | cached | (93.2) | loss 8.315 → 6.800; eval perplexity 1,593.3 |" in text
    assert "| compress | ran | 2.0 | MatMulNBits: model 5.66 MB → 3.3 MB (×1.72 smaller); perplexity +2.50% |" in text
    assert "380 nodes; fused SkipSimplifiedLayerNormalization ×8 |" in text and "Attention ×0" not in text
    assert "Time spent by the stages that ran now: 53.9 s." in text  # cached train excluded
    # held-out perplexity: same tokens every stage, change vs the checkpoint
    assert "same 8,192 held-out tokens (teacher-forced windows of 128 tokens)" in text
    assert "| checkpoint (PyTorch, after training) | 12.000 |  |" in text
    assert "| export (ONNX, fp32) | 12.000 | +0.00% |" in text
    assert "| compress (int4) | 12.300 | +2.50% |" in text
    assert "| decode_with_past | 9.54e-07 | yes |" in text and "Greedy tokens identical: yes." in text
    # the shipped graph: the manifest's measurement, not the export's exact parity
    assert "| graph | compress (int4), run by slmc.runtime on CPUExecutionProvider |" in text
    assert ("| greedy tokens | 45 of 64 identical up to each prompt's first divergence (4 held-out prompts); "
            "first divergence per prompt: "
            "none, token 5, none, token 8 |") in text
    assert "| top-1 agreement along the checkpoint's continuation | 96.9% |" in text
    assert "| max abs logit difference (prefill) | 8.31e-01 |" in text and "| held-out perplexity | 12.300 |" in text
    assert "| exact parity (greedy identical, logits within 0.001) | no |" in text
    assert "| `model.onnx` | 100 kB | 100,000 |" in text
    assert "Compression: MatMulNBits: model 5.66 MB → 3.3 MB (×1.72 smaller)." in text
    assert "| steps | 20 |" in text and "| training loss | 8.3150 → 6.8000 |" in text
    assert "4,086.9 (step 0) → 1,593.3 (step 20)" in text and "| median throughput | 660 tokens/s |" in text
    assert f"![training loss and eval perplexity]({LOSS_PLOT})" in text
    assert f"{len(json.loads((run / 'plan.json').read_text())['rules_checked'])} rules checked" in text


def test_bound_matches_the_latency_rule(complete):
    """The report's decode bound is rule latency.meets_target's estimate for the same config."""
    from slmc.rules.latency import estimate_tps

    run, cfg = complete
    bound = decode_bound(run, read_config(run))
    expected = estimate_tps(cfg, Arch.from_model(cfg.model), cfg.compress.precision, cfg.device.memory_bandwidth_gbps)
    assert bound is not None and bound.tokens_per_s == pytest.approx(expected[0])
    text = write_run_report(run, full_results()).read_text()
    assert f"≈{expected[0]:,.0f} tok/s at batch 1" in text and "at 40 GB/s" in text


def test_loss_png_is_written_and_byte_identical(complete, tmp_path):
    run, _ = complete
    write_run_report(run, full_results())
    first = (run / LOSS_PLOT).read_bytes()
    copy = Path(shutil.copytree(run, tmp_path / "copy"))
    (copy / LOSS_PLOT).unlink()
    (copy / "report.md").unlink()
    write_run_report(copy, full_results())
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and len(first) > 5000
    assert (copy / LOSS_PLOT).read_bytes() == first
    assert (copy / "report.md").read_text() == (run / "report.md").read_text()
    assert b"matplotlib" not in first.lower()  # no Software entry in the metadata


def test_plan_only_run_renders(tmp_path):
    run, _ = make_run(tmp_path, ["device=cpu"])
    text = write_run_report(run).read_text()
    assert "| state | plan only |" in text and "Plan only: nothing was executed yet." in text
    stages = [line for line in text.splitlines() if line.startswith("| ") and "| not run |" in line]
    assert len(stages) == len(json.loads((run / "plan.json").read_text())["stages"])
    assert "No training metrics (train.kind=pretrain, nothing run yet)." in text
    assert "Not measured: the run stopped before the export stage." in text
    assert "No bundle was packaged." in text
    assert not (run / LOSS_PLOT).exists()


def test_train_none_has_no_loss_curve(tmp_path):
    run, _ = make_run(tmp_path, ["train=none"], metrics=[{"step": 0, "eval_ppl": 4096.2, "elapsed": 0.0}])
    results = typed({"train": {"command": "python train.py", "first_loss": None, "last_loss": None,
                               "final_eval_ppl": 4096.2, "seconds": 2.0}})
    text = write_run_report(run, results).read_text()
    assert "| train | ran | 2.0 | no training steps |" in text
    assert "| training loss | — |" in text and "4,096.2 (step 0)" in text
    assert "No loss curve: train.kind=none logged no training steps." in text
    assert not (run / LOSS_PLOT).exists()
    assert "**train.kind_matches_init**" in text  # the plan's warning is listed


def test_partial_run_ignores_a_stale_bundle(tmp_path):
    """A bundle left by an earlier execution is not reported as this execution's output."""
    run, _ = make_run(tmp_path, ["device=cpu", "compress=int4"], metrics=METRICS,
                      manifest_ppl={"checkpoint": 99.0, "export": 99.0}, model_bytes=10)
    results = Results()
    for name, result in full_results().items():
        if name in ("data", "tokenizer", "train", "export"):
            results.add(name, result)
    text = write_run_report(run, results).read_text()
    assert "| state | partial |" in text and "| compress | not run |" in text
    assert "| checkpoint (PyTorch, after training) | 12.000 |" in text and "99.000" not in text
    assert "No bundle was packaged." in text and "model.onnx" not in text


def test_regenerated_from_the_folder_alone(complete):
    run, _ = complete
    text = write_run_report(run).read_text()
    assert "| train | ran (earlier) | 93.2 |" in text and "| package | ran (earlier) |" in text
    assert "| compress (int4) | 12.300 | +2.50% |" in text and "Time spent" not in text


def test_metrics_after_resume_keep_the_last_record_per_step(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 0, "eval_ppl": 9.0}\n{"step": 5, "loss": 3.0}\n{"step": 5, "loss": 2.5}\n{"step": 6, "lo')
    assert read_metrics(tmp_path) == [{"step": 0, "eval_ppl": 9.0}, {"step": 5, "loss": 2.5}]


def test_a_config_this_version_cannot_read_gets_no_bound(complete):
    """decode_bound validates config.yaml with the schema and asks the rule; a config from another
    version (an unknown key here) gets no bound rather than arithmetic on guessed fields."""
    run, _ = complete
    config = read_config(run)
    assert decode_bound(run, config) is not None
    assert decode_bound(run, {**config, "renamed_section": {}}) is None


def test_the_stage_table_uses_each_result_s_own_figure(complete):
    run, _ = complete
    results = full_results()
    text = write_run_report(run, results).read_text()
    for name, result in results.items():
        assert f"| {name} | ran |" in text and result.figure().replace("|", "\\|") in text, name


def test_a_bundle_from_before_the_shipped_graph_was_measured(tmp_path):
    """Its parity block is the export's: reported as the export parity, the shipped graph as not measured."""
    run, _ = make_run(tmp_path, ["device=cpu", "compress=int4"], metrics=METRICS, manifest_ppl=PPL, shipped=None)
    text = write_run_report(run).read_text()
    assert "Not measured: the bundle was packaged by an slmc that measured only the fp32 export" in text
    assert "| decode_with_past | 9.54e-07 | yes |" in text and "Greedy tokens identical: yes." in text
    assert "| graph |" not in text


def test_a_partial_run_shows_the_shipped_measurement_of_its_results(tmp_path):
    """No bundle yet (package did not run): the measurement the last deploy stage carries is reported."""
    run, _ = make_run(tmp_path, ["device=cpu", "compress=int4"], metrics=METRICS)
    results = full_results()
    results.get("compress").shipped = {k: v for k, v in SHIPPED.items() if k not in ("tolerance", "ok")}
    text = write_run_report(run, results).read_text()
    assert "| state | partial |" in text and "| graph | compress (int4)" in text
    assert "| top-1 agreement along the checkpoint's continuation | 96.9% |" in text
    assert "exact parity" not in text  # judged against export.parity_tolerance when the manifest is written
    results.get("compress").shipped = {**SHIPPED, "stage": "optimize", "precision": "fp32"}  # not this bundle's
    text = write_run_report(run, results).read_text()
    assert "| graph |" not in text and "Not measured: the run stopped before a graph was ready to ship." in text


def test_a_continued_run_names_its_parent_and_its_version():
    from slmc.report import lineage_summary

    plan = {"provenance": {"lineage": {"version": "3", "init": {"kind": "run", "run": "base-run"},
                                       "parent": {"run_name": "base-run", "version": "2"}}}}
    assert lineage_summary(plan, None) == {"version": "3", "started": "from run base-run (its bundle v2)"}
    assert lineage_summary(plan, {"version": "3-hotfix"})["version"] == "3-hotfix"  # what consumers saw
    assert lineage_summary({}, None) is None  # a plan from before lineage was recorded
