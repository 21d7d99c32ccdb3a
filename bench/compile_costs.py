"""What slmc's compiler costs a person: `slmc check` cold, plan-only, and a sweep vs independent compiles.

- check: `slmc check` in fresh processes (median of n), plus one `python -X importtime`
  run whose top imports show what a cold start pays for (torch must not be there).
- plan-only: `slmc compile --plan-only` (validate, plan, render; no stage runs).
- sweep: the points of compress x device compiled one after another into one out_dir,
  so the stage cache shares data/tokenizer/train/export; against the cost of compiling
  each point on its own. That cost is measured (`independent="measure"`: every point
  with --no-cache into its own fresh out_dir) or estimated (`"estimate"`: each point's
  sweep wall time plus the recorded run time of every stage it took from the cache).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("torch", "transformers", "onnx", "onnxruntime", "onnxscript", "numpy", "tokenizers",
         "hydra", "omegaconf", "pydantic", "jinja2", "rich", "yaml", "safetensors")
STAGE_LINE = re.compile(r"^stage (\w+): (reused from the stage cache \((\w+)\))?")


def slmc_command() -> list[str]:
    """The `slmc` console script beside this interpreter, else `python -m slmc.cli`."""
    script = Path(sys.executable).parent / "slmc"
    return [str(script)] if script.exists() else [sys.executable, "-m", "slmc.cli"]


def _env() -> dict:
    return {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}


def _timed(cmd: list[str], log: Path | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    seconds = time.perf_counter() - start
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {' '.join(cmd)}\n{done.stdout}\n--- stderr ---\n{done.stderr}")
    return seconds, done


def parse_importtime(stderr: str) -> list[dict]:
    """`-X importtime` lines as {module, self_us, cumulative_us, depth} (depth 0: imported directly)."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") < 2:
            continue
        head, cumulative, name = line.split("|", 2)
        self_us = head.split(":", 1)[1].strip()
        if not self_us.isdigit():  # the header line
            continue
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        rows.append({"module": name.strip(), "self_us": int(self_us), "cumulative_us": int(cumulative),
                     "depth": depth})
    return rows


def import_profile(rows: list[dict], top: int = 10) -> dict:
    """Top imports by cumulative time, which heavy packages were imported, and the total."""
    roots = {r["module"].split(".")[0] for r in rows}
    return {
        "top_cumulative": [{"module": r["module"], "ms": round(r["cumulative_us"] / 1e3, 1)}
                           for r in sorted(rows, key=lambda r: -r["cumulative_us"])[:top]],
        "heavy_imported": sorted(h for h in HEAVY if h in roots),
        "torch_imported": "torch" in roots,
        "total_import_ms": round(sum(r["self_us"] for r in rows) / 1e3, 1),
    }


def time_check(runs: int = 5) -> dict:
    """`slmc check` cold, `runs` fresh processes, and one import-time profile."""
    times = []
    for _ in range(runs):
        seconds, done = _timed(slmc_command() + ["check"])
        if done.returncode != 0:
            return {"error": f"slmc check exited {done.returncode}: {done.stderr.strip()[-400:]}"}
        times.append(seconds)
    code = "import sys; from slmc.cli import main; sys.exit(main(['check']))"
    _, done = _timed([sys.executable, "-X", "importtime", "-c", code])
    return {"command": " ".join(slmc_command() + ["check"]), "seconds": times,
            "median_s": statistics.median(times), "imports": import_profile(parse_importtime(done.stderr))}


def time_plan_only(out_dir: Path, runs: int = 3) -> dict:
    """`slmc compile --plan-only` (model=tiny) into a scratch out_dir, `runs` times."""
    times = []
    for _ in range(runs):
        seconds, done = _timed(slmc_command() + ["compile", "--plan-only", f"out_dir={out_dir}"])
        if done.returncode != 0:
            return {"error": f"plan-only exited {done.returncode}: {done.stderr.strip()[-400:]}"}
        times.append(seconds)
    return {"seconds": times, "median_s": statistics.median(times)}


def parse_stages(stdout: str) -> dict[str, str | None]:
    """Stage name -> the cache key prefix it was restored from (None: it ran)."""
    stages: dict[str, str | None] = {}
    for line in stdout.splitlines():
        match = STAGE_LINE.match(line.strip())
        if match:
            stages[match.group(1)] = match.group(3)
    return stages


def cached_stage_seconds(out_dir: Path, stage: str, key_prefix: str) -> float | None:
    """The run time a cache entry recorded when its stage really ran."""
    for entry in (Path(out_dir) / ".cache" / stage).glob(f"{key_prefix}*/result.json"):
        seconds = json.loads(entry.read_text()).get("seconds")
        return float(seconds) if seconds is not None else None
    return None


def point_overrides(points: list[dict], base: list[str]) -> list[list[str]]:
    return [base + [f"{k}={v}" for k, v in point.items()] for point in points]


def sweep_points(compress=("none", "int8", "int4"), devices=("cpu", "mobile_arm64")) -> list[dict]:
    return [{"compress": c, "device": d} for d in devices for c in compress]


def run_sweep(points: list[dict], base: list[str], out_dir: Path, logs: Path) -> dict:
    """Compile every point, one after another, into one fresh out_dir (the stage cache shares work)."""
    shutil.rmtree(out_dir, ignore_errors=True)
    rows = []
    for index, overrides in enumerate(point_overrides(points, base)):
        seconds, done = _timed(slmc_command() + ["compile", *overrides, f"out_dir={out_dir}"],
                               logs / f"sweep-{index}.log")
        if done.returncode != 0:
            return {"error": f"point {overrides} exited {done.returncode}: {done.stderr.strip()[-400:]}"}
        stages = parse_stages(done.stdout)
        reused = {name: cached_stage_seconds(out_dir, name, key) for name, key in stages.items() if key}
        rows.append({"overrides": overrides, "seconds": round(seconds, 2),
                     "stages_run": [s for s, k in stages.items() if not k],
                     "stages_reused": reused,
                     "independent_estimate_s": round(seconds + sum(v or 0.0 for v in reused.values()), 2)})
    return {"points": rows, "total_s": round(sum(r["seconds"] for r in rows), 2)}


def run_independent(points: list[dict], base: list[str], root: Path, logs: Path) -> dict:
    """Compile every point with --no-cache into its own fresh out_dir."""
    rows = []
    for index, overrides in enumerate(point_overrides(points, base)):
        out_dir = root / f"point-{index}"
        shutil.rmtree(out_dir, ignore_errors=True)
        seconds, done = _timed(slmc_command() + ["compile", "--no-cache", *overrides, f"out_dir={out_dir}"],
                               logs / f"independent-{index}.log")
        if done.returncode != 0:
            return {"error": f"point {overrides} exited {done.returncode}: {done.stderr.strip()[-400:]}"}
        rows.append({"overrides": overrides, "seconds": round(seconds, 2)})
    return {"points": rows, "total_s": round(sum(r["seconds"] for r in rows), 2)}


def run_multirun(points: list[dict], base: list[str], out_dir: Path, logs: Path) -> dict:
    """The same sweep as one `slmc compile -m` (Hydra multirun) process, if this slmc supports it."""
    shutil.rmtree(out_dir, ignore_errors=True)
    keys = list(points[0])
    values = {k: ",".join(dict.fromkeys(p[k] for p in points)) for k in keys}
    cmd = slmc_command() + ["compile", "-m", *base, *(f"{k}={v}" for k, v in values.items()), f"out_dir={out_dir}"]
    seconds, done = _timed(cmd, logs / "multirun.log")
    if done.returncode != 0:
        return {"error": f"exited {done.returncode}: {(done.stderr or done.stdout).strip()[-400:]}"}
    bundles = sorted(str(p.parent.parent.name) for p in Path(out_dir).glob("*/bundle/manifest.json"))
    return {"command": " ".join(cmd), "seconds": round(seconds, 2), "bundles": bundles}


def sweep_costs(work: Path, steps: int, independent: str = "estimate", multirun: bool = False) -> dict:
    """The 6-point compress x device sweep against independent compiles (see the module docstring)."""
    points = sweep_points()
    base = ["model=tiny", f"train.max_steps={steps}"]
    logs = work / "logs"
    sweep = run_sweep(points, base, work / "sweep", logs)
    result: dict = {"points": points, "base_overrides": base, "sweep": sweep, "independent_mode": independent}
    if "error" in sweep:
        return result
    result["one_full_compile_s"] = sweep["points"][0]["seconds"]  # the first point: nothing cached yet
    if independent == "measure":
        result["independent"] = run_independent(points, base, work / "independent", logs)
        total = result["independent"].get("total_s")
    else:
        total = round(sum(p["independent_estimate_s"] for p in sweep["points"]), 2)
        result["independent"] = {"total_s": total, "how": "estimate: each point's sweep wall time + the recorded "
                                 "run time of the stages it reused from the cache"}
    result["sweep_vs_one_compile"] = sweep["total_s"] / result["one_full_compile_s"]
    result["independent_vs_sweep"] = total / sweep["total_s"] if total else None
    if multirun:
        result["multirun"] = run_multirun(points, base, work / "multirun", logs)
    return result


def measure_all(work: Path, *, check_runs: int = 5, sweep: bool = True, sweep_steps: int = 20,
                independent: str = "estimate", multirun: bool = False) -> dict:
    """Everything above; the sweep is skipped when `sweep` is False (e.g. --quick)."""
    work.mkdir(parents=True, exist_ok=True)
    result = {"check": time_check(check_runs), "plan_only": time_plan_only(work / "plan-only")}
    if sweep:
        result["sweep"] = sweep_costs(work, sweep_steps, independent, multirun)
    return result
