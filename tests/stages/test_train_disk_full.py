"""A write that fails in the generated train.py (a full disk) is one clear line, not a traceback.

RLIMIT_FSIZE makes every write past the limit fail with EFBIG, as a full disk fails with
ENOSPC; the limit sits between the small files (metrics, RNG state) and the large ones
(a resumable checkpoint, the final model), so the failure lands in the write under test.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from slmc.layout import LAYOUT

LIMIT = 1_000_000  # bytes: model=tiny's state.pt is ~16 MB, its model.safetensors ~5 MB


def run_with_file_limit(run_dir: Path) -> subprocess.CompletedProcess:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("SLMC_STOP_AFTER_STEP", None)
    return subprocess.run([sys.executable, LAYOUT.train_script], cwd=run_dir, env=env, capture_output=True,
                          text=True, timeout=240, preexec_fn=limit)


def error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


def test_a_checkpoint_that_does_not_fit_is_named_and_removed(make_run):
    run_dir = make_run("train.save_every=5", "train.max_steps=10")
    line = error_line(run_with_file_limit(run_dir))
    partial = run_dir / LAYOUT.checkpoints / ".tmp-step-5" / "state.pt"
    assert line.startswith(f"train.py: error: cannot write {partial}: File too large (EFBIG);"), line
    assert "the disk is full (ENOSPC)" in line and "rerun to resume" in line
    assert list((run_dir / LAYOUT.checkpoints).iterdir()) == []  # no half-written step-5
    assert not (run_dir / LAYOUT.final_checkpoint).exists()


@pytest.mark.slow  # the same write guard as the checkpoint case above, at the final save
def test_a_final_model_that_does_not_fit_is_named_and_removed(make_run):
    run_dir = make_run("train=none")  # no training, no resumable checkpoints: only the final save writes weights
    line = error_line(run_with_file_limit(run_dir))
    staging = run_dir / f".tmp-{LAYOUT.final_checkpoint}"
    assert line.startswith(f"train.py: error: cannot write {staging}: File too large (EFBIG);"), line
    assert not staging.exists() and not (run_dir / LAYOUT.final_checkpoint).exists()
