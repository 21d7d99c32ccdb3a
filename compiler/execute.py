"""Execute: run the plan's host stages in order, each returning its typed result.

A failing stage raises `StageError` that names the stage and the stages that
completed before it (like onnx-ir's pass manager), so the user knows what
state the run folder is in. Target stages (a TensorRT engine build) are not
run here: the bundle carries the script that runs them on the device. After
each stage, the held-out perplexity of every stage that changed the weights is
(re)written into the run's metrics.jsonl (stages.stage_eval).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from .cache import StageCache, stage_key
from .errors import SlmcError, StageError
from .plan import PlannedStage
from .stages import progress
from .stages.base import Results, StageResult
from .stages.stage_eval import record_stage_evals


def execute(checked, run_dir: Path, *, use_cache: bool = True) -> Results:
    done: list[str] = []
    results = Results()
    cache = StageCache(Path(checked.cfg.out_dir).expanduser()) if use_cache else None
    for step in checked.plan.stages:
        if step.runs_on != "host":
            progress.stage_on_target(step.name, step.description)
            continue
        if cache and cache.cacheable(step):
            key = stage_key(step, checked.cfg, run_dir)
            with cache.claim(step, key):
                restored = cache.restore(step, key, run_dir)
                if restored is not None:
                    progress.stage_reused(step.name, key)
                    result = dataclasses.replace(restored, cached=True)
                else:
                    result = _run(step, checked.cfg, run_dir, results, done)
                    cache.store(step, key, run_dir, result)
        else:
            result = _run(step, checked.cfg, run_dir, results, done)
        results.add(step.name, result)
        done.append(step.name)
        record_stage_evals(checked.cfg, run_dir, results)  # held-out perplexity per stage, in metrics.jsonl
    return results


def _run(step: PlannedStage, cfg, run_dir: Path, results: Results, done: list[str]) -> StageResult:
    run = step.stage.run
    if run is None:
        raise StageError(f"stage {step.name!r} has no implementation in this version",
                         where=f"plan.{step.name}", fix=_after(done))
    progress.stage_started(step.name, step.description)
    start = time.perf_counter()
    try:
        result = run(cfg, run_dir, results)
    except StageError as exc:
        raise StageError(f"stage {step.name!r} failed: {exc.message}", where=exc.where,
                         fix=exc.fix or _after(done)) from exc
    except SlmcError:
        raise
    except Exception as exc:  # a stage bug: name it and what completed, keep the cause
        raise StageError(f"stage {step.name!r} failed: {type(exc).__name__}: {exc}",
                         fix=_after(done)) from exc
    if not isinstance(result, step.stage.result):
        raise StageError(f"stage {step.name!r} returned {type(result).__name__}, not {step.stage.result.__name__}",
                         fix="this is a bug in slmc's stage registry; please report it")
    seconds = round(time.perf_counter() - start, 2)
    progress.stage_finished(step.name, seconds)
    return dataclasses.replace(result, seconds=seconds)


def _after(done: list[str]) -> str:
    if not done:
        return "no stage had completed; fix the cause and rerun the same command"
    return f"stages completed before it: {', '.join(done)}; rerun the same command to continue"
