"""The default intra-op threads and spinning of a bundle's session, chosen per bundle and machine.

ONNX Runtime's own default (one spinning intra-op thread per physical core) is fast on an idle
machine and the slow case on a busy one: a thread pool that busy-waits between the ops of a
decode step competes with the other work for the same cores, and every op waits for the
thread the scheduler put last (issue 13 measured 0.32x of ORT GenAI that way, tiny int4, one
other process running). `choose_threading` is the rule, a pure function of the machine and the
model so it is tested table by table; `machine_facts` reads the machine once, at session load.

The rule (bench/results/ has the measurements behind it):
- a model whose weights are small (< SMALL_MODEL_BYTES) runs one thread: each op's work is too
  small to share, and handing it to a second thread costs more than it saves;
- otherwise one thread per physical core that the current load leaves free (at least one);
- spinning only when the load leaves each of our threads a core of its own (within
  SPIN_LOAD_SLACK of a core: sampling noise), so a busy-waiting thread never takes a core
  another process is using now; with one thread there is no pool to spin. On an idle machine
  this is ONNX Runtime's own default, worth +45% (int4) and +20% (fp32) decode at 2 threads
  on the SmolLM2-135M shape (bench/results/threads-2026-12-05.md); an earlier, stricter rule
  (a whole core idle beyond our threads) never spun on a 2-core machine.
An explicit thread count or spinning setting always wins (`runtime.intra_op_threads`, --threads,
--spinning); the reason string says which.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

SMALL_MODEL_BYTES = 32 * 2**20
"""Below this many bytes of weights one intra-op thread is the default (tiny, ~5 MB: one thread
beat two at every load measured here; small, ~140 MB fp32, gains from a second idle core)."""
SPIN_LOAD_SLACK = 0.25
"""Spin only when the cores left free by the load cover our threads to within this much of a core."""
LOAD_SAMPLE_S = 0.1
"""How long `machine_facts` samples CPU use (the caller sleeps meanwhile, so it sees only others)."""


@dataclass(frozen=True)
class ThreadChoice:
    """What a session runs with, and why (shown by `slmc run --verbose` and `slmc bench`)."""

    threads: int
    spinning: bool
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MachineFacts:
    """The inputs of the rule that come from the machine."""

    physical_cores: int
    load: float
    """Cores' worth of other work running now (CPU use of others, or the 1-minute load average)."""
    load_source: str


def choose_threading(physical_cores: int, load: float, model_bytes: int, *, threads: int | None = None,
                     spinning: bool | None = None, load_source: str = "load",
                     threads_from: str = "requested") -> ThreadChoice:
    """Intra-op threads and spinning for one session (pure: the tests give it every case).

    physical_cores: cores this process may use (>= 1); load: cores' worth of other work (>= 0);
    model_bytes: the weights a decode step reads. threads / spinning: explicit settings (win);
    threads_from names where an explicit thread count came from (for the reason).
    """
    if physical_cores < 1:
        raise ValueError(f"physical_cores must be >= 1, got {physical_cores}")
    if model_bytes < 0 or load < 0 or math.isnan(load):
        raise ValueError(f"load and model_bytes must be >= 0, got load={load}, model_bytes={model_bytes}")
    free = max(0.0, physical_cores - load)
    machine = f"{physical_cores} cores, {load_source} {load:.2f}"
    if threads is not None:
        count, why = threads, f"{threads} thread{'s' * (threads > 1)} ({threads_from})"
    elif model_bytes < SMALL_MODEL_BYTES:
        count = 1
        why = (f"1 thread: weights {model_bytes / 2**20:.1f} MiB < {SMALL_MODEL_BYTES // 2**20} MiB, "
               "too little work per op to share")
    else:
        count = max(1, min(physical_cores, int(free + 0.5)))
        why = f"{count} thread{'s' * (count > 1)}: {machine} leaves {free:.1f} free"
    if spinning is not None:
        spin, spin_why = spinning, f"spinning {'on' if spinning else 'off'} requested"
    elif count == 1:
        spin, spin_why = False, "no spinning (one thread, no pool)"
    elif free + SPIN_LOAD_SLACK >= count:
        spin, spin_why = True, f"spinning (load {load:.2f} leaves each of the {count} threads a core)"
    else:
        spin, spin_why = False, (f"no spinning ({count} threads and load {load:.2f} share the "
                                 f"{physical_cores} cores)")
    return ThreadChoice(count, spin, f"{why}; {spin_why}")


def load_matters(size: int, threads: int | None = None, spinning: bool | None = None) -> bool:
    """Whether `choose_threading` reads the load for these inputs (else sampling it is skipped)."""
    one_thread = threads == 1 or (threads is None and size < SMALL_MODEL_BYTES)
    return not one_thread and (threads is None or spinning is None)


def model_bytes(model_file: str | Path) -> int:
    """Bytes of an ONNX model file and its external-data files (what a decode step reads, roughly)."""
    model_file = Path(model_file)
    total = model_file.stat().st_size if model_file.is_file() else 0
    return total + sum(f.stat().st_size for f in model_file.parent.glob(f"{model_file.name}*.data") if f.is_file())


def usable_cores() -> int:
    """Logical CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_facts(sample_s: float = LOAD_SAMPLE_S) -> MachineFacts:
    """Physical cores usable here and the load of other work now.

    With psutil (a dependency of slmc, not of the runtime extra): physical cores (capped by the
    affinity mask) and other processes' CPU use over `sample_s` while this thread sleeps. Without
    it: the usable logical CPUs and the 1-minute load average (which lags, and counts this
    process's own recent work).
    """
    usable = usable_cores()
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
        return MachineFacts(usable, round(load, 2), "loadavg")
    logical = psutil.cpu_count(logical=True) or usable
    physical = psutil.cpu_count(logical=False) or logical
    cores = max(1, min(usable, round(usable * physical / logical)))
    busy = psutil.cpu_percent(interval=sample_s) / 100 * logical
    return MachineFacts(cores, round(busy, 2), "cpu use")
