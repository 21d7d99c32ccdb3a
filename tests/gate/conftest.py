"""One tiny run compiled twice (fp32, then int8 reusing its data, tokenizer, training and export
from the stage cache), shared by the gate and diff tests of this folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from slmc.load import load_config
from slmc.pipeline import compile_config

# Few steps on little text: the held-out evaluations score a few thousand tokens, not 8,192.
FAST = ["train.max_steps=4", "train.batch_size=4", "train.seq_len=32", "train.eval_every=4", "train.save_every=4",
        "train.warmup_steps=1", "export.max_seq_len=64", "generation.max_new_tokens=16", "data.max_chars=60000"]
LOOSE = ["targets.max_ppl_increase=1.0", "targets.min_speed_ratio=0.01", "targets.max_size_ratio=2.0"]


def compile_run(out_dir: Path, *overrides: str):
    return compile_config(load_config([*FAST, f"out_dir={out_dir}", *overrides]), quiet=True)


@pytest.fixture(scope="session")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gate")


@pytest.fixture(scope="session")
def fp32_run(out_dir):
    return compile_run(out_dir)


@pytest.fixture(scope="session")
def int8_run(out_dir, fp32_run):
    """int8 against the fp32 bundle with loose tolerances: the gate runs and passes."""
    return compile_run(out_dir, "compress=int8", f"targets.baseline={fp32_run.bundle}", *LOOSE)
