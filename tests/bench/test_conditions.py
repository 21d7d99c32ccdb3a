"""Issue 13's bench plumbing on fake measurements: real shapes, thread conditions, --busy, the
per-condition targets and report, and the GPU check's dry run. No real benchmarking here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import analysis, busy, gpu_check, measure, prepare, report, run  # noqa: E402


def _row(decode: float, threading: str | None = None) -> dict:
    info = {"threading": {"threads": 1, "spinning": False, "reason": "x"}} if threading else {}
    return {"ok": True, "runs": [{"prefill_ms": 5.0, "decode_tokens_per_s": decode}], "peak_rss_mb": 10.0,
            "info": info}


def test_conditions_side_by_side_and_busy_adds_defaults_idle_and_busy():
    args = run.parse_args(["--models", "smollm2-135m", "--threads", "1,2", "--busy", "--precisions", "fp32,int4"])
    assert args.threads == [1, 2] and args.precisions == ["fp32", "int4"]
    assert [(c["condition"], c["threads"], c["busy"]) for c in args.conditions] == [
        ("1 thread", 1, False), ("2 threads", 2, False), ("defaults", None, False), ("defaults, busy", None, True)]
    assert [c["condition"] for c in run.conditions([None, 2], busy=True)] == ["defaults", "2 threads",
                                                                              "defaults, busy"]
    assert run.parse_args([]).conditions == [{"condition": "2 threads", "threads": 2, "busy": False}]
    with pytest.raises(SystemExit):
        run.parse_args(["--threads", "two"])
    with pytest.raises(SystemExit):
        run.parse_args(["--precisions", "int3"])


def test_real_shapes_compile_from_their_cached_checkpoint(tmp_path):
    overrides = prepare.model_overrides("qwen2.5-0.5b", tmp_path)
    assert overrides[:2] == ["init=pretrained", "train=none"]
    assert overrides[2] == f"init.path={(tmp_path / 'checkpoints' / 'qwen2.5-0.5b').resolve()}"
    assert prepare.model_overrides("tiny", tmp_path) == prepare.MODELS["tiny"]


def test_a_stamped_checkpoint_is_reused_without_building(tmp_path, monkeypatch):
    from slmc.families.published import PUBLISHED

    folder = tmp_path / "checkpoints" / "smollm2-135m"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / prepare.STAMP).write_text(json.dumps({"shape": "smollm2-135m", "config": PUBLISHED["smollm2-135m"],
                                                    "seed": 0}))
    monkeypatch.setattr(prepare, "_run", lambda *a, **k: pytest.fail("rebuilt a cached checkpoint"))
    assert prepare.real_checkpoint("smollm2-135m", tmp_path) == folder


def test_measure_rounds_passes_each_conditions_threads_and_runs_the_busy_process(monkeypatch):
    seen = []

    def fake_worker(python, spec, timeout):
        alive = [pid for pid in busy_pids if _alive(pid)]
        seen.append((spec["threads"], bool(alive)))
        return {**_row(100.0), "wall_seconds": 0.1, "loadavg_1m": 1.0}

    busy_pids: list[int] = []
    real_busy = busy.busy_process

    def recording_busy(enabled=True):
        context = real_busy(enabled)

        class Wrap:
            def __enter__(self):
                pid = context.__enter__()
                if pid:
                    busy_pids.append(pid)
                return pid

            def __exit__(self, *exc):
                return context.__exit__(*exc)

        return Wrap()

    monkeypatch.setattr(measure, "run_worker", fake_worker)
    monkeypatch.setattr(measure, "busy_process", recording_busy)
    systems = {"slmc int4": {"python": sys.executable, "module": "slmc_bundle", "artifact": "x"}}
    cells = [{"model": "m", "batch": 1, "prompts": [[1]], "systems": systems, **c}
             for c in run.conditions([1], busy=True)]
    records = measure.measure_rounds(cells, 1, {"new_tokens": 2, "threads": 1, "warmup": 0, "timeout": 10},
                                     log=lambda _: None)
    assert seen == [(1, False), (None, False), (None, True)]
    assert [r["condition"] for r in records] == ["1 thread", "defaults", "defaults, busy"]
    assert [r["busy"] for r in records] == [False, False, True]
    assert busy_pids and not any(_alive(pid) for pid in busy_pids)  # stopped after its cell


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "zombie" not in status.read_text()


def test_busy_process_really_burns_a_cpu():
    with busy.busy_process() as pid:
        import time

        time.sleep(0.3)
        used = sum(int(x) for x in Path(f"/proc/{pid}/stat").read_text().split()[13:15])
    assert used > 0 and not _alive(pid)


def _conditions() -> dict:
    def cell(slmc4, genai4, slmc32, genai32, torch):
        rows = analysis.cell_rows({"slmc int4": [_row(slmc4, "x")], "ort-genai int4": [_row(genai4)],
                                   "slmc fp32": [_row(slmc32, "x")], "ort-genai fp32": [_row(genai32)],
                                   "torch-eager fp32": [_row(torch)]})
        analysis.add_ratios(rows)
        return {1: rows}

    return {"smollm2-135m": {"1 thread": cell(90, 80, 30, 31, 10), "2 threads": cell(120, 100, 50, 45, 20),
                             "defaults": cell(120, 100, 50, 45, 20), "defaults, busy": cell(70, 80, 30, 25, 5)}}


def test_condition_targets_real_shapes_and_busy():
    found = {t["target"]: t for t in analysis.evaluate_targets({}, None, _conditions())}
    assert found["smollm2-135m b1 1 thread: slmc int4 / ORT GenAI int4 decode"]["met"] is True  # 1.125
    assert found["smollm2-135m b1 1 thread: slmc fp32 / ORT GenAI fp32 decode"]["met"] is False  # 0.97
    assert found["smollm2-135m b1 2 threads: slmc int4 / ORT GenAI int4 decode"]["threshold"] == 1.1
    assert found["smollm2-135m b1 2 threads: slmc fp32 / ORT GenAI fp32 decode"]["threshold"] == 1.0
    busy_int4 = found["smollm2-135m b1 defaults, busy: slmc int4 / ORT GenAI int4 decode"]
    assert busy_int4["threshold"] == 1.0 and busy_int4["met"] is False
    assert found["smollm2-135m b1 defaults, busy: slmc fp32 / ORT GenAI fp32 decode"]["met"] is True
    idle = found["smollm2-135m b1 defaults: slmc int4 / ORT GenAI int4 decode (information)"]
    assert idle["met"] is None and idle["value"] == pytest.approx(1.2)
    assert not any(name.startswith(("tiny", "small")) for name in found)  # not measured, not listed


def test_report_shows_every_condition_and_the_ratio_table():
    conditions = _conditions()
    settings = {"prompt_tokens": 32, "new_tokens": 32, "threads": [1, 2], "rounds": 2, "warmup": 1,
                "conditions": run.conditions([1, 2], busy=True)}
    machine = {"cpu": "Fake CPU", "cpus_available": 2, "logical_cpus": 2, "memory_gib": 8, "os": "Linux",
               "python": "3.11", "packages": {}}
    result = {"meta": {"started": "2026-12-05T08:00:00", "command": "python bench/run.py --busy",
                       "machine": machine, "loadavg_start": [9, 9, 9], "loadavg_end": [9, 9, 9],
                       "settings": settings},
              "models": {"smollm2-135m": {"parameters_m": 134.5, "weights_note": "random weights",
                                          "conditions": conditions["smollm2-135m"],
                                          "cells": conditions["smollm2-135m"]["1 thread"]}},
              "targets": analysis.evaluate_targets({}, None, conditions)}
    text = report.render(json.loads(json.dumps(result)))
    assert "## Ratios by condition" in text
    assert "| smollm2-135m | 1 | defaults, busy | 0.88× | 1.20× | 14.00× | 1t spin off |" in text
    assert "batch 1, 2 threads" in text and "batch 1, defaults, busy" in text
    assert "slmc int4 (1t spin off)" in text
    assert "conditions side by side in every round: 1 thread; 2 threads; defaults; defaults, busy" in text


def test_gpu_check_bytes_per_step_match_the_published_parameter_counts():
    from slmc.families.published import PUBLISHED

    # the stage-cost results count 494.0M and 134.5M parameters (tied embeddings, read once)
    assert gpu_check.decode_bytes(PUBLISHED["qwen2.5-0.5b"], 1, 0)["weight_params_read"] == 494_032_768
    assert gpu_check.decode_bytes(PUBLISHED["smollm2-135m"], 1, 0)["weight_params_read"] == 134_515_008
    one, eight = (gpu_check.decode_bytes(PUBLISHED["qwen2.5-0.5b"], b, 192) for b in (1, 8))
    assert eight["bytes_per_step"] - one["bytes_per_step"] == 7 * one["kv_bytes_per_row"]
    assert one["kv_bytes_per_row"] == 2 * 24 * 2 * 64 * 192 * 2  # K and V, layers, kv heads, head dim, tokens, fp16


def _dry_run(tmp_path, *extra) -> tuple[subprocess.CompletedProcess, dict | None]:
    argv = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--bandwidth-gbps", "3350",
            "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), *extra]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    found = list((tmp_path / "out").glob("gpu-check-dry-run-*.json"))
    return done, json.loads(found[0].read_text()) if found else None


def test_gpu_check_dry_run_on_cpu_plans_the_gpu_compile_and_the_bound(tmp_path):
    done, result = _dry_run(tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert result["dry_run"] is True and result["gpu"]["source"] == "--bandwidth-gbps"
    assert "compress=fp16" in result["plan"]["slmc_compile"] and "device=gpu_server" in result["plan"]["slmc_compile"]
    assert "export.max_batch_size=8" in result["plan"]["slmc_compile"]
    one = result["bytes_per_step"]["1"]
    assert one["bound_tokens_per_s"] == pytest.approx(3350e9 / one["bytes_per_step"])
    assert "CUDAExecutionProvider" in " ".join(result["missing"])  # this CPU machine: named, not a traceback
    assert list((tmp_path / "out").glob("gpu-check-dry-run-*.md"))


def test_gpu_check_dry_run_checks_the_gpu_compile_of_a_checkpoint(tmp_path, built):
    bundle, hf = built
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(hf, checkpoint)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bundle / name, checkpoint / name)
    done, result = _dry_run(tmp_path, "--checkpoint", str(checkpoint), "--prompt-tokens", "16", "--new-tokens", "16")
    assert done.returncode == 0, (done.stderr + json.dumps(result or {}))[-3000:]
    assert result["slmc_check"]["ok"] is True, result["slmc_check"]["output"]


def test_run_main_wires_conditions_from_measurement_to_report(tmp_path, monkeypatch):
    """run.main end to end with the slow parts faked: every condition is measured, analysed,
    targeted and rendered."""
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({
        "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128, "vocab_size": 300, "tie_word_embeddings": True, "eos_token_id": 2}))
    systems = {name: {"python": sys.executable, "module": "x", "artifact": "x"}
               for name in ("slmc int4", "ort-genai int4", "slmc fp32", "ort-genai fp32")}

    def fake_prepare(model, args, optimum, log):
        return {"checkpoint": str(checkpoint), "parameters_m": 134.5, "weights_note": "random weights",
                "config": json.loads((checkpoint / "config.json").read_text()), "systems": dict(systems),
                "unavailable": {}, "graphs": {}, "weight_bytes": {n: 1000 for n in systems}, "bundles": {}}

    speed = {"slmc int4": 120.0, "ort-genai int4": 100.0, "slmc fp32": 50.0, "ort-genai fp32": 50.0}

    def fake_rounds(cells, rounds, settings, log):
        return [{"round": r, "model": c["model"], "batch": c["batch"], "condition": c["condition"],
                 "system": name, **_row(speed[name] / (2 if c["busy"] and "genai" in name else 1))}
                for r in range(rounds) for c in cells for name in c["systems"]]

    monkeypatch.setattr(run, "prepare_model", fake_prepare)
    monkeypatch.setattr(run, "measure_rounds", fake_rounds)
    monkeypatch.setattr(run.machine, "bandwidth", lambda *a: {"gbps": 10.0, "array_mib": 1, "repeats": 1,
                                                               "counting": "x"})
    assert run.main(["--models", "smollm2-135m", "--batches", "1", "--threads", "1", "--busy", "--runs", "2",
                     "--skip-optimum", "--skip-compile-costs", "--out", str(tmp_path / "out")]) == 0
    (path,) = (tmp_path / "out").glob("*.json")
    result = json.loads(path.read_text())
    assert set(result["models"]["smollm2-135m"]["conditions"]) == {"1 thread", "defaults", "defaults, busy"}
    found = {t["target"]: t for t in result["targets"]}
    assert found["smollm2-135m b1 defaults, busy: slmc int4 / ORT GenAI int4 decode"]["value"] == pytest.approx(2.4)
    assert found["smollm2-135m b1 1 thread: slmc fp32 / ORT GenAI fp32 decode"]["met"] is True
    assert "| smollm2-135m | 1 | defaults, busy | 2.40× | 2.00× |" in path.with_suffix(".md").read_text()


def test_an_orphaned_busy_process_stops_itself(tmp_path):
    """The harness killed mid-cell (no `finally`) must not leave a spinning process on a shared machine."""
    script = ("import sys, time; sys.path.insert(0, %r)\n"
              "from bench.busy import busy_process\n"
              "with busy_process() as pid:\n    print(pid, flush=True)\n    time.sleep(60)\n" % str(ROOT))
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())
    assert _alive(pid)
    parent.kill()
    parent.wait()
    import time

    deadline = time.monotonic() + 20
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)
