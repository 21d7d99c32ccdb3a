"""The benchmark harness's plumbing on fake measurements: arithmetic, report, worker, CLI.

No real benchmarking here (that is `python bench/run.py`); every test takes well under a second
except the two subprocess ones (--help and a worker run), a few seconds together.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import analysis, compile_costs, graphs, measure, report  # noqa: E402
from bench.systems import common  # noqa: E402


def _sample(decode: float, prefill: float = 10.0, rss: float = 100.0, **extra) -> dict:
    run = {"prefill_ms": prefill, "decode_tokens_per_s": decode, **extra}
    return {"ok": True, "runs": [run], "peak_rss_mb": rss, "info": {"first_tokens": [5, 6, 7, 8]}}


def test_summary_median_ratio_and_paired_ratio():
    assert analysis.summarize([3.0, 1.0, 2.0, None]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert analysis.summarize([])["median"] is None
    assert analysis.ratio(330.0, 300.0) == pytest.approx(1.1)
    assert analysis.ratio(None, 1.0) is None and analysis.ratio(1.0, 0.0) is None
    # run-by-run ratios 2, 1, 3 -> median 2
    assert analysis.paired_ratio([200, 100, 300], [100, 100, 100]) == 2


def test_bandwidth_bound_arithmetic():
    # 4 layers, 2 kv heads, head_dim 32, context 192, fp32: 2 * 4 * 2 * 32 * 192 * 4 bytes
    kv = analysis.kv_bytes_per_row(4, 2, 32, analysis.average_context(128, 128))
    assert kv == 2 * 4 * 2 * 32 * 192 * 4 == 393216
    # 10 GB/s, 1e8 weight bytes, no KV: 100 steps/s; batch 4 shares the weights: 400 tokens/s
    assert analysis.bound_tokens_per_s(10.0, 10**8, 0, 1) == pytest.approx(100.0)
    assert analysis.bound_tokens_per_s(10.0, 10**8, 0, 4) == pytest.approx(400.0)
    assert analysis.bound_tokens_per_s(10.0, 10**8, 10**8, 1) == pytest.approx(50.0)


def test_rows_ratios_bounds_and_agreement_from_fake_measurements():
    samples = {
        "slmc fp32": [_sample(220.0, 8.0), _sample(200.0, 10.0), _sample(180.0, 12.0)],
        "ort-genai fp32": [_sample(100.0, 20.0), _sample(100.0, 20.0), {"ok": False, "error": "boom"}],
        "torch-eager fp32": [_sample(50.0, 40.0)],
    }
    samples["slmc fp32"][0]["runs"][0]["session_fraction"] = 0.9
    rows = analysis.cell_rows(samples)
    assert rows["slmc fp32"]["decode_tokens_per_s"]["median"] == 200.0
    assert rows["slmc fp32"]["session_fraction"]["median"] == 0.9
    assert rows["ort-genai fp32"]["errors"] == ["boom"]
    analysis.add_ratios(rows)
    genai = rows["ort-genai fp32"]
    assert genai["compared_with"] == "slmc fp32"
    assert genai["decode_ratio"] == pytest.approx(2.0)
    assert genai["prefill_speedup"] == pytest.approx(2.0)  # 20 ms / 10 ms
    assert "decode_ratio" not in rows["slmc fp32"]
    analysis.add_bounds(rows, {"slmc fp32": 10**8}, 0.0, 10.0, 1)
    assert rows["slmc fp32"]["bound_tokens_per_s"] == pytest.approx(100.0)
    assert rows["slmc fp32"]["percent_of_bound"] == pytest.approx(200.0)
    assert "bound_tokens_per_s" not in rows["torch-eager fp32"]  # no weight bytes given
    analysis.add_agreement(rows)
    assert rows["slmc fp32"]["tokens_agree_with_reference"] == 4
    assert analysis.common_prefix([1, 2, 3], [1, 9, 3]) == 1


def test_targets_met_missed_and_not_measured():
    def row(decode):
        return {"decode_tokens_per_s": analysis.summarize([decode])}

    cells = {"tiny": {1: {"slmc int4": row(330.0), "ort-genai int4": row(300.0),
                          "slmc fp32": row(100.0), "ort-genai fp32": row(100.0)}}}
    costs = {"check": {"median_s": 0.3}, "sweep": {"sweep_vs_one_compile": 2.5}}
    found = {t["target"]: t for t in analysis.evaluate_targets(cells, costs)}
    assert found["tiny b1: slmc int4 / ORT GenAI int4 decode"]["met"] is True
    assert found["tiny b1: slmc fp32 / ORT GenAI fp32 decode"]["met"] is False
    assert found["small b1: slmc int4 / PyTorch eager decode"]["met"] is None
    assert found["slmc check, cold process (median)"]["met"] is True
    assert found["6-point compress x device sweep / one full compile"]["met"] is False
    assert not any("slmc's block size" in name for name in found)  # no same-block row measured


def test_same_block_genai_row_is_information_not_a_target():
    def row(decode):
        return {"decode_tokens_per_s": analysis.summarize([decode])}

    rows = {"slmc int4": row(330.0), "ort-genai int4": row(250.0), "ort-genai int4, slmc's block": row(320.0)}
    targets = analysis.evaluate_targets({"tiny": {1: rows}}, None)
    info = next(t for t in targets if "slmc's block size" in t["target"])
    assert info["value"] == 330.0 / 320.0 and info["met"] is None and info["threshold"] is None
    text = "\n".join(report.targets_section(targets))
    assert "| tiny b1: slmc int4 / ORT GenAI int4 at slmc's block size (information) | 1.03 x | – | – |" in text
    assert "| tiny b1: slmc int4 / ORT GenAI int4 decode | 1.32 x | >= 1.1 x | yes |" in text


def _fake_result() -> dict:
    rows = analysis.cell_rows({"slmc int4": [_sample(300.0)], "ort-genai int4": [_sample(200.0)]})
    analysis.add_ratios(rows)
    rows["optimum fp32"] = {"unavailable": "pip install failed: no wheel",
                            "decode_tokens_per_s": analysis.summarize([])}
    machine = {"cpu": "Fake CPU", "cpus_available": 2, "logical_cpus": 2, "memory_gib": 8, "os": "Linux",
               "python": "3.11", "packages": {"onnxruntime": "1.0"}}
    settings = {"prompt_tokens": 128, "new_tokens": 128, "threads": 2, "rounds": 5, "warmup": 1}
    return {"meta": {"started": "2026-01-02T03:04:05", "command": "python bench/run.py", "machine": machine,
                     "loadavg_start": [1, 1, 1], "loadavg_end": [2, 2, 2], "settings": settings},
            "bandwidth": {"gbps": 12.0, "array_mib": 512, "repeats": 5, "counting": "2 x", "runs": [12.0]},
            "models": {"tiny": {"parameters_m": 1.3, "weights_note": "trained", "cells": {1: rows},
                                "graphs": {"slmc int4": {"nodes": 264, "nodes_after_ort": 264,
                                                         "fused_ops": {"MatMulNBits": 28}}}}},
            "targets": analysis.evaluate_targets({"tiny": {1: rows}}, None),
            "compile_costs": {"check": {"median_s": 0.4, "seconds": [0.4], "imports": {
                "top_cumulative": [{"module": "hydra", "ms": 100.0}], "heavy_imported": ["hydra"],
                "torch_imported": False, "total_import_ms": 300.0}}}}


def test_report_renders_machine_tables_ratios_and_unavailable_systems():
    text = report.render(_fake_result())
    assert text.startswith("# slmc benchmark — 2026-01-02")
    assert "Fake CPU" in text and "12.0 GB/s" in text
    assert "| ort-genai int4 | 10.0 | 200.0 (200–200) |" in text
    assert "1.50× vs slmc int4" in text
    assert "| optimum fp32 | unavailable: pip install failed: no wheel |" in text
    assert "| tiny b1: slmc int4 / ORT GenAI int4 decode | 1.50 x | >= 1.1 x | yes |" in text
    assert "torch imported: no" in text
    assert "264 nodes" in text
    # the JSON round trip (batch keys become strings) renders the same tables
    assert report.render(json.loads(json.dumps(_fake_result()))) == text


def test_importtime_and_stage_parsing():
    stderr = ("import time: self [us] | cumulative | imported package\n"
              "import time:       500 |        500 |   numpy.core\n"
              "import time:      1000 |       1500 | numpy\n"
              "import time:      2000 |       9000 | torch\n")
    rows = compile_costs.parse_importtime(stderr)
    assert [r["module"] for r in rows] == ["numpy.core", "numpy", "torch"]
    assert rows[0]["depth"] == 1 and rows[1]["depth"] == 0
    profile = compile_costs.import_profile(rows)
    assert profile["torch_imported"] is True
    assert profile["top_cumulative"][0] == {"module": "torch", "ms": 9.0}
    assert profile["total_import_ms"] == 3.5
    stages = compile_costs.parse_stages("stage data: reused from the stage cache (2c32a50da987)\n"
                                        "stage export: ONNX with KV cache\nrun folder: /x\n")
    assert stages == {"data": "2c32a50da987", "export": None}
    assert len(compile_costs.sweep_points()) == 6


def test_prompts_rotation_and_run_record():
    first = measure.prompts(50, {0, 1, 2, 7}, batch=2, length=16)
    assert first == measure.prompts(50, {0, 1, 2, 7}, batch=2, length=16)
    assert all(len(p) == 16 and 7 not in p and min(p) >= 3 for p in first)
    assert measure.rotation(["a", "b", "c"], 1) == ["b", "c", "a"]
    assert measure.rotation(["a", "b", "c"], 3) == ["a", "b", "c"]
    record = common.run_record(0.010, 1.27, batch=4, new_tokens=128)
    assert record["prefill_ms"] == 10.0
    assert record["decode_tokens_per_s"] == pytest.approx(4 * 127 / 1.27, rel=1e-3)
    assert common.peak_rss_mb() > 0
    with pytest.raises(RuntimeError, match="expected 128"):
        common.check_length("x", 127, 128)


def test_graph_stats_excludes_an_untied_embedding_lookup_table(tmp_path):
    table = numpy_helper.from_array(np.zeros((16, 4), np.float32), "embed")   # 256 bytes, lookup only
    head = numpy_helper.from_array(np.zeros((4, 16), np.float32), "lm_head")  # 256 bytes, read every step
    nodes = [helper.make_node("Gather", ["embed", "input_ids"], ["h"]),
             helper.make_node("MatMul", ["h", "lm_head"], ["logits"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 16])],
                              [table, head])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    stats = graphs.graph_stats(path)
    assert stats["nodes"] == 2 and stats["initializer_bytes"] == 512
    assert stats["embedding_lookup_bytes"] == 256 and stats["bytes_read_per_token"] == 256
    assert stats["bytes_on_disk"] == path.stat().st_size


def test_worker_reports_a_failing_system_instead_of_crashing(tmp_path):
    result_path = tmp_path / "result.json"
    spec = {"system": "no_such_system", "threads": 1, "result_path": str(result_path)}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "worker.py"), str(tmp_path / "spec.json")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    result = json.loads(result_path.read_text())
    assert result["ok"] is False and "no_such_system" in result["error"]


def test_run_help_lists_the_documented_flags():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0
    for flag in ("--models", "--large", "--batches", "--runs", "--quick", "--skip-optimum", "--threads"):
        assert flag in done.stdout
