"""A base run shared by the lineage and rebuild tests: the tiny model, a few steps, fp32 bundle.

Compiled once per session (tens of seconds on one core); tests that change files work on copies.
"""

from __future__ import annotations

import pytest

FAST = ("train.max_steps=12", "train.batch_size=4", "train.seq_len=32", "train.warmup_steps=2",
        "train.eval_every=6", "train.eval_batches=2", "train.save_every=6", "train.log_every=1",
        "train.precision=fp32", "export.max_seq_len=64", "generation.max_new_tokens=16", "data.max_chars=200000")


@pytest.fixture(scope="session")
def maintain_out(tmp_path_factory):
    return tmp_path_factory.mktemp("maintain")


@pytest.fixture(scope="session")
def base_run(maintain_out):
    from slmc.load import load_config
    from slmc.pipeline import compile_config

    return compile_config(load_config([*FAST, f"out_dir={maintain_out}"]), quiet=True)
