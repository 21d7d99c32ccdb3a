"""What every system module shares: the timing record, peak RSS, the warm-up/run loop.

Stdlib and numpy only: this module is also imported inside the Optimum virtual
environment, which has neither slmc nor this project's other dependencies.

Definitions used by every system (so numbers compare):
- prefill_ms: from handing the prompt to the system until the first new token exists.
- decode_tokens_per_s: batch * (new_tokens - 1) / seconds from the first new token
  to the last one (every system decodes exactly new_tokens per row, EOS ignored).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable

FIRST_TOKENS = 16  # greedy tokens of row 0 kept per run: a same-weights cross-check between systems


def peak_rss_mb() -> float:
    """This process's peak resident set size, MiB.

    Linux: VmHWM from /proc/self/status, the high-water mark of this process's own
    address space. Not ru_maxrss: across fork + exec Linux carries the parent's peak
    into the child's ru_maxrss, so every worker would report at least the harness's size.
    Elsewhere ru_maxrss (KiB on Linux, bytes on macOS).
    """
    try:
        for line in open("/proc/self/status", encoding="ascii"):
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def run_record(prefill_s: float, decode_s: float, batch: int, new_tokens: int, **extra) -> dict:
    """One timed generation in the shared units (see the module docstring)."""
    decoded = batch * (new_tokens - 1)
    return {
        "prefill_ms": round(prefill_s * 1e3, 3),
        "decode_tokens_per_s": round(decoded / decode_s, 2) if decode_s > 0 else 0.0,
        "decode_ms_per_step": round(decode_s * 1e3 / max(new_tokens - 1, 1), 4),
        "new_tokens": new_tokens,
        **extra,
    }


def check_length(system: str, produced: int, wanted: int) -> None:
    """Every system must decode exactly `wanted` tokens per row, or the rates do not compare."""
    if produced != wanted:
        raise RuntimeError(f"{system} produced {produced} new tokens per row, expected {wanted}")


def measure_loop(one_run: Callable[[int], dict], spec: dict) -> tuple[list[dict], float]:
    """spec["warmup"] discarded runs of spec["warmup_tokens"] new tokens (default: all of them),
    then spec["runs"] kept runs of spec["new_tokens"]; also the seconds the warm-up took."""
    start = time.perf_counter()
    for _ in range(spec["warmup"]):
        one_run(spec.get("warmup_tokens") or spec["new_tokens"])
    warm_s = time.perf_counter() - start
    return [one_run(spec["new_tokens"]) for _ in range(spec["runs"])], round(warm_s, 3)


def set_thread_env(threads: int | None) -> None:
    """Pin OpenMP/MKL pools before a library creates them (torch, numpy BLAS); None: each
    library's own default (the harness's "defaults" condition)."""
    if threads is None:
        return
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
