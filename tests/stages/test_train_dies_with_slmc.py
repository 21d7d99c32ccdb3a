"""train.py dies with the slmc process that started it, also when it runs under torchrun.

The train stage starts train.py (or torchrun, for host.num_processes > 1) with
PR_SET_PDEATHSIG, so SIGKILL of slmc alone (the OOM killer's choice) sends the child
SIGTERM; torchrun must then stop its workers. Here a small parent process runs the real
train stage (`slmc.stages.train.run_train`), is killed once training runs, and every
process it had started must be gone shortly after. (One process without torchrun:
tests/hardening/test_crash_safety.py::test_train_py_dies_when_slmc_is_killed.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

LONG = ("train.max_steps=100000", "train.save_every=100000", "train.eval_every=100000", "train.log_every=1")
PARENT = """
import sys
from pathlib import Path
from slmc.load import load_config
from slmc.stages.base import Results
from slmc.stages.train import run_train
run_train(load_config(sys.argv[2:]), Path(sys.argv[1]), Results())
"""


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_torchrun_and_its_workers_die_when_slmc_is_killed(make_run):
    overrides = (*LONG, "host.num_processes=2")
    run_dir = make_run(*overrides)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(run_dir), *overrides], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    children: list[psutil.Process] = []
    try:
        metrics = run_dir / "metrics.jsonl"
        training = wait_until(lambda: metrics.is_file() and '"loss"' in metrics.read_text(), timeout=240)
        assert training and parent.poll() is None, "training never started"
        children = psutil.Process(parent.pid).children(recursive=True)
        workers = [c for c in children if "train.py" in " ".join(c.cmdline()) and c.ppid() != parent.pid]
        assert len(workers) == 2, [c.cmdline() for c in children]  # torchrun's two processes
        os.kill(parent.pid, signal.SIGKILL)  # slmc alone; nothing else is signalled by the test
        parent.wait(timeout=30)
        assert wait_until(lambda: not any(alive(c) for c in children), timeout=60), \
            [c.cmdline() for c in children if alive(c)]
    finally:
        for child in children:
            if alive(child):
                child.kill()
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()
