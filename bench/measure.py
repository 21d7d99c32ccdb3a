"""Round-robin measurement: each (round, model, batch) runs every system once, in a rotating
order, each in a fresh process (bench/worker.py), so drift on a shared machine falls on
all systems alike and every process's peak RSS is its own.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.busy import busy_process

WORKER = Path(__file__).with_name("worker.py")


@dataclass(frozen=True)
class System:
    """One row of the benchmark: a name, its worker module, its precision, and what it needs."""

    name: str
    module: str
    precision: str


GENAI_SAME_BLOCK = "ort-genai int4, slmc's block"

SYSTEMS = (
    System("slmc fp32", "slmc_bundle", "fp32"),
    System("slmc int8", "slmc_bundle", "int8"),
    System("slmc int4", "slmc_bundle", "int4"),
    System("torch-eager fp32", "torch_eager", "fp32"),
    System("ort-genai fp32", "ort_genai", "fp32"),
    System("ort-genai int4", "ort_genai", "int4"),
    # the builder again at the block size slmc's compress stage chose (block_size=auto): the
    # same-settings comparison beside the one against the builder's defaults
    System(GENAI_SAME_BLOCK, "ort_genai", "int4"),
    System("optimum fp32", "optimum_ort", "fp32"),
)


def prompts(vocab_size: int, special: set[int], batch: int, length: int, seed: int = 0) -> list[list[int]]:
    """Random ordinary token ids (no special id), the same for every system."""
    choices = np.array([i for i in range(3, vocab_size) if i not in special])
    rng = np.random.default_rng(seed)
    return [rng.choice(choices, length).tolist() for _ in range(batch)]


def rotation(items: list, round_index: int) -> list:
    """items rotated by round_index, so each system takes each position in turn."""
    if not items:
        return []
    shift = round_index % len(items)
    return items[shift:] + items[:shift]


def run_worker(python: Path, spec: dict, timeout: float) -> dict:
    """One measurement in a fresh process; failures come back as {"ok": False, "error": ...}."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = {**spec, "result_path": str(Path(tmp) / "result.json")}
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        start = time.perf_counter()
        try:
            done = subprocess.run([str(python), str(WORKER), str(spec_path)], capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"timed out after {timeout:.0f} s"}
        result_path = Path(spec["result_path"])
        if result_path.is_file():
            result = json.loads(result_path.read_text())
        else:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])[-500:]
            result = {"ok": False, "error": f"worker exited {done.returncode} without a result: {tail}"}
        result["wall_seconds"] = round(time.perf_counter() - start, 3)
        return result


def measure_rounds(cells: list[dict], rounds: int, settings: dict, log=print) -> list[dict]:
    """Every cell's systems, round by round; a system that fails is dropped from later rounds.

    A cell is {"model", "batch", "prompts", "systems": {name: {"python", "module", "artifact"}}} and
    optionally "condition" (a label), "threads" (int, or None: every system at its defaults; absent:
    settings["threads"]) and "busy" (run a background busy process while the cell is measured).
    Returns one record per worker run: {"round", "model", "batch", "condition", "system", **result}.
    """
    records, dropped = [], set()
    for round_index in range(rounds):
        for cell in cells:
            condition = cell.get("condition")
            names = [n for n in cell["systems"] if (cell["model"], condition, n) not in dropped]
            with busy_process(bool(cell.get("busy"))) as busy_pid:
                for name in rotation(names, round_index):
                    system = cell["systems"][name]
                    spec = {"system": system["module"], "artifact": system["artifact"], "prompts": cell["prompts"],
                            "new_tokens": settings["new_tokens"], "threads": cell.get("threads", settings["threads"]),
                            "warmup": settings["warmup"], "warmup_tokens": settings.get("warmup_tokens"), "runs": 1}
                    result = run_worker(Path(system["python"]), spec, settings["timeout"])
                    records.append({"round": round_index, "model": cell["model"], "batch": cell["batch"],
                                    "condition": condition, "busy": busy_pid is not None, "system": name, **result})
                    log(_progress(round_index, rounds, cell, name, result))
                    if not result.get("ok"):
                        dropped.add((cell["model"], condition, name))
    return records


def _progress(round_index: int, rounds: int, cell: dict, name: str, result: dict) -> str:
    where = f" {cell['condition']}" if cell.get("condition") else ""
    head = f"[{round_index + 1}/{rounds}] {cell['model']:>5} b{cell['batch']}{where} {name:<17}"
    if not result.get("ok"):
        return f"{head} FAILED: {result.get('error', '?')[:200]}"
    run = result["runs"][0]
    return (f"{head} decode {run['decode_tokens_per_s']:>9.1f} tok/s  prefill {run['prefill_ms']:>8.1f} ms  "
            f"rss {result['peak_rss_mb']:>7.1f} MiB  ({result['wall_seconds']:.1f} s, load {result['loadavg_1m']})")
