"""Per-stage held-out perplexity in metrics.jsonl (slmc.stages.stage_eval).

Unit tests on stage results as the stages return them, then one real compile of a
2-layer model (int8 for ORT, so export, optimize and compress all measure), recompiled from
the stage cache, and a prune of its checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slmc.layout import LAYOUT
from slmc.load import load_config
from slmc.stages.base import Results
from slmc.stages.registry import result_type
from slmc.stages.stage_eval import record_stage_evals, stage_records

CFG = load_config(["export.max_seq_len=64"])


def typed(results: dict[str, dict]) -> Results:
    found = Results()
    for name, fields in results.items():
        found.add(name, result_type(name)(**fields))
    return found


EXPORT = {"checkpoint_ppl": 61.0, "heldout_ppl": 61.00001, "heldout_eval_tokens": 4096,
          "onnx": "work/export/model.onnx", "exporter": "dynamo", "opset": 18, "nodes": 10, "export_seconds": 1.0,
          "io": {}, "kv_cache": {}, "model": {}, "parity": {}}
PRUNE = {"heldout_ppl_before": 50.123456, "heldout_ppl_after": 90.5, "importance": "magnitude",
         "calibration_tokens": 0, "params_before": 2, "params_after": 1, "kept_layers": [0], "dropped_layers": [1],
         "kv_groups_kept": [[0]], "kv_heads": (1, 1), "mlp_width": (4, 2), "layer_importance": [1.0, 0.0],
         "arch": "", "source": "/src", "checkpoint": "/run/init"}
COMPRESS = {"heldout_ppl": 62.5, "onnx": "work/compress/model.onnx", "report": {"format": "MatMulInteger"},
            "ppl_increase": 0.02}
RESULTS = {
    "data": {"train_chars": 10, "heldout_chars": 1, "files": {}, "train_sha256": ""},
    "prune": PRUNE,
    "train": {"command": "python train.py", "first_loss": 9.0, "last_loss": 8.0, "final_eval_ppl": 60.0},
    "export": EXPORT,
    "optimize": {"heldout_ppl": 61.00002, "onnx": "work/optimize/model.onnx", "report": {}, "kv_share_buffer": True},
    "compress": COMPRESS,
    "package": {"bundle": "bundle", "bytes": 100, "files": {}},
}
TRAINING = [{"step": 0, "eval_ppl": 4000.0, "elapsed": 0.0}, {"step": 1, "loss": 8.0, "lr": 0.001}]


def lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / LAYOUT.metrics).read_text().splitlines()]


def stage_lines(run_dir: Path) -> list[dict]:
    return [r for r in lines(run_dir) if r.get("event") == "stage_eval"]


def test_one_record_per_weight_changing_stage_in_lifecycle_order():
    records = stage_records(CFG, typed(RESULTS))
    assert [r["stage"] for r in records] == ["prune", "train", "export", "optimize", "compress"]
    prune, train, export, _, compress = records
    assert prune["heldout_ppl"] == 90.5 and prune["heldout_ppl_before"] == 50.1235 and prune["model"] == "init"
    assert train == {"event": "stage_eval", "stage": "train", "heldout_ppl": 61.0, "model": "checkpoint",
                     "measured_with": "torch", "window": 64, "heldout_tokens": 4096}
    assert export["measured_with"] == "onnxruntime" and compress["model"] == "work/compress/model.onnx"
    assert all("step" not in r for r in records)  # readers of training records skip them


def test_a_tensorrt_builder_flag_is_not_a_measurement():
    results = {**RESULTS, "compress": {**COMPRESS, "heldout_ppl": 61.0, "report": {"format": "builder-flag"}}}
    assert "compress" not in [r["stage"] for r in stage_records(CFG, typed(results))]


def test_records_are_rewritten_not_appended(tmp_path):
    text = "".join(json.dumps(r) + "\n" for r in TRAINING) + '{"step": 2, "lo\n'  # a line cut by a kill
    (tmp_path / LAYOUT.metrics).write_text(text)
    record_stage_evals(CFG, tmp_path, typed(RESULTS))
    first = (tmp_path / LAYOUT.metrics).read_text()
    assert first.startswith(text) and len(stage_lines_of(first)) == 5
    record_stage_evals(CFG, tmp_path, typed(RESULTS))
    assert (tmp_path / LAYOUT.metrics).read_text() == first
    changed = {**RESULTS, "compress": {**COMPRESS, "heldout_ppl": 70.0}}
    record_stage_evals(CFG, tmp_path, typed(changed))
    records = [json.loads(line) for line in stage_lines_of((tmp_path / LAYOUT.metrics).read_text())]
    assert [r["heldout_ppl"] for r in records if r["stage"] == "compress"] == [70.0] and len(records) == 5


def test_nothing_is_written_before_train_py_creates_the_file(tmp_path):
    record_stage_evals(CFG, tmp_path, typed({"prune": PRUNE}))
    assert not (tmp_path / LAYOUT.metrics).exists()


def stage_lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if '"stage_eval"' in line]


# ----------------------------------------------------------------------------- a real compile

TINY = ["model.hidden_size=64", "model.num_hidden_layers=2", "model.num_attention_heads=4",
        "model.num_key_value_heads=2", "model.intermediate_size=128", "model.vocab_size=1024",
        "train.max_steps=20", "train.batch_size=4", "train.seq_len=32", "train.warmup_steps=2",
        "train.eval_every=10", "train.eval_batches=1", "train.save_every=20", "train.precision=fp32",
        "data.max_chars=60000", "export.max_seq_len=64", "generation.max_new_tokens=8"]


@pytest.mark.slow
def test_a_compile_records_every_stage_once_and_a_cached_rerun_adds_nothing(tmp_path):
    from slmc.pipeline import compile_config

    overrides = [*TINY, "compress=int8", f"out_dir={tmp_path}"]
    summary = compile_config(load_config(overrides))
    run_dir = summary.run_dir
    records = stage_lines(run_dir)
    assert [r["stage"] for r in records] == ["train", "export", "optimize", "compress"]
    manifest = json.loads((run_dir / "bundle" / "manifest.json").read_text())
    shipped = manifest["metrics"]["heldout_perplexity"]
    by_stage = {r["stage"]: r["heldout_ppl"] for r in records}
    assert by_stage["train"] == pytest.approx(shipped["checkpoint"], abs=1e-4)
    for stage in ("export", "optimize", "compress"):
        assert by_stage[stage] == pytest.approx(shipped[stage], abs=1e-4), stage
    assert any("loss" in r for r in lines(run_dir))  # train.py's own records are still there
    before = (run_dir / LAYOUT.metrics).read_text()

    again = compile_config(load_config(overrides))
    assert all(r.cached for name, r in again.stages.items() if name != "package")
    assert (run_dir / LAYOUT.metrics).read_text() == before

    pruned = compile_config(load_config([*overrides, "init=prune", f"init.path={run_dir / 'checkpoint'}",
                                         "init.prune.layer_ratio=0.5", "train=finetune", "train.max_steps=4",
                                         "train.warmup_steps=1", "train.save_every=4"]))
    records = stage_lines(pruned.run_dir)
    assert [r["stage"] for r in records] == ["prune", "train", "export", "optimize", "compress"]
    prune = pruned.stages["prune"]
    assert records[0]["heldout_ppl"] == round(prune.heldout_ppl_after, 4)
    assert records[0]["heldout_ppl_before"] == pytest.approx(by_stage["train"], rel=1e-4)  # the same checkpoint
