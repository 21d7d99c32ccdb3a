"""Shared setup of the hardening suites: case counters and helpers that run `slmc` as a user
does (a subprocess in its own process group). The fixture bundle the tamper and request suites
attack is the runtime tests' one (tests/fixtures/bundle.py, registered in tests/conftest.py).

Every suite adds to `COUNTS` how many hostile cases it tried; the totals are printed at
the end of the run (the closing note of issue 6 quotes them).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

COUNTS: collections.Counter = collections.Counter()
"""Hostile cases tried, per kind ("fuzz cases", "injection strings", "kill points", ...)."""


def count(kind: str, n: int = 1) -> None:
    COUNTS[kind] += n


def pytest_terminal_summary(terminalreporter):
    if COUNTS:
        terminalreporter.write_sep("-", "hardening cases tried")
        for kind, n in sorted(COUNTS.items()):
            terminalreporter.write_line(f"{kind}: {n}")


# A compile that runs every host stage in well under a minute on two busy cores: a
# 2-layer model, a few steps, a small slice of the builtin text.
TINY_STEPS = 30
TINY = (
    "model.hidden_size=64", "model.num_hidden_layers=2", "model.num_attention_heads=4",
    "model.num_key_value_heads=2", "model.intermediate_size=128", "model.vocab_size=1024",
    "model.max_position_embeddings=512",
    "train.max_steps=30", "train.batch_size=2", "train.seq_len=32", "train.warmup_steps=2",
    "train.eval_every=10", "train.eval_batches=1", "train.save_every=5", "train.log_every=1",
    "train.precision=fp32", "data.max_chars=60000", "export.max_seq_len=64", "generation.max_new_tokens=16",
)


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLMC_")}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(extra)
    return env


def slmc_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "slmc.cli", *args]


def run_slmc(*args: str, cwd: Path | None = None, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    """`slmc ARGS` to completion, as a user runs it (cold start, own process group)."""
    return subprocess.run(slmc_command(*args), cwd=cwd, env=popen.pop("env", None) or child_env(),
                          capture_output=True, text=True, timeout=timeout, start_new_session=True, **popen)


def start_slmc(*args: str, log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """`slmc ARGS` in the background, in its own session so a kill reaches train.py too."""
    handle = open(log, "w")
    return subprocess.Popen(slmc_command(*args), cwd=cwd, env=child_env(), stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 240, poll: float = 0.005) -> bool:
    """Poll until condition() is true (True) or the process ends first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return bool(condition())
        time.sleep(poll)
    raise TimeoutError("the awaited stage marker never appeared")


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the whole process group: slmc and the train.py it launched die at once, like a crash."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


@pytest.fixture
def snapshot():
    """snapshot(root) -> {relative path: bytes} of every file under root (to prove nothing changed)."""

    def take(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    return take
