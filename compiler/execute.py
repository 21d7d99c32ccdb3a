"""Execute: run the plan's host stages in order.

A failing stage raises `StageError` that names the stage and the stages that
completed before it (like onnx-ir's pass manager), so the user knows what
state the run folder is in. Target stages (a TensorRT engine build) are not
run here: the bundle carries the script that runs them on the device. After
each stage, the held-out perplexity of every stage that changed the weights is
(re)written into the run's metrics.jsonl (stages.stage_eval).
"""

from __future__ import annotations

import time
from pathlib import Path

from . import console as out
from .cache import StageCache, stage_key
from .errors import SlmcError, StageError
from .stages import runners
from .stages.stage_eval import record_stage_evals


def execute(checked, run_dir: Path, *, use_cache: bool = True) -> dict:
    done: list[str] = []
    results: dict[str, dict] = {}
    cache = StageCache(Path(checked.cfg.out_dir).expanduser()) if use_cache else None
    for stage in checked.plan.stages:
        if stage.runs_on != "host":
            out.console().print(f"[dim]stage {stage.name}: runs on the target ({stage.description})[/dim]")
            continue
        if cache and cache.cacheable(stage):
            key = stage_key(stage, checked.cfg, run_dir)
            with cache.claim(stage, key):
                cached = cache.restore(stage, key, run_dir)
                if cached is not None:
                    out.console().print(f"[bold cyan]stage {stage.name}[/bold cyan]: "
                                        f"reused from the stage cache ({key[:12]})")
                    results[stage.name] = {**cached, "cached": True}
                else:
                    results[stage.name] = _run(stage, checked.cfg, run_dir, results, done)
                    cache.store(stage, key, run_dir, results[stage.name])
        else:
            results[stage.name] = _run(stage, checked.cfg, run_dir, results, done)
        done.append(stage.name)
        record_stage_evals(checked.cfg, run_dir, results)  # held-out perplexity per stage, in metrics.jsonl
    return results


def _run(stage, cfg, run_dir: Path, results: dict, done: list[str]) -> dict:
    runner = runners.RUNNERS.get(stage.name)
    if runner is None:
        raise StageError(f"stage {stage.name!r} has no implementation in this version",
                         where=f"plan.{stage.name}", fix=_after(done))
    out.console().print(f"[bold cyan]stage {stage.name}[/bold cyan]: {stage.description}")
    start = time.perf_counter()
    try:
        result = runner(cfg, run_dir, results) or {}
    except StageError as exc:
        raise StageError(f"stage {stage.name!r} failed: {exc.message}", where=exc.where,
                         fix=exc.fix or _after(done)) from exc
    except SlmcError:
        raise
    except Exception as exc:  # a stage bug: name it and what completed, keep the cause
        raise StageError(f"stage {stage.name!r} failed: {type(exc).__name__}: {exc}",
                         fix=_after(done)) from exc
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def _after(done: list[str]) -> str:
    if not done:
        return "no stage had completed; fix the cause and rerun the same command"
    return f"stages completed before it: {', '.join(done)}; rerun the same command to continue"
