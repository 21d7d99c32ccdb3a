"""Run folders for the generated train.py: a small deterministic corpus and its tokenizer.

The corpus is Python standard-library source read with `inspect.getsource` (a few
hundred KB, the same on every run of one Python version); the tokenizer is a
byte-level BPE trained on it to the model's vocabulary size, with the special
tokens the tokenizer stage uses. Runs execute `python train.py` in a subprocess
with the run folder as cwd, as the CLI does.
"""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slmc.layout import LAYOUT
from slmc.load import load_config
from slmc.stages.tokenizer import EOS, PAD
from slmc.render_train import render_train_script

TRAIN_MODULES = ("argparse", "textwrap", "dataclasses", "enum", "functools", "inspect", "pathlib", "typing")
HELDOUT_MODULES = ("json.decoder", "collections")

# A 20-step run of model=tiny sized to take a few seconds on one core.
FAST = (
    "train.max_steps=20",
    "train.batch_size=4",
    "train.seq_len=32",
    "train.warmup_steps=5",
    "train.eval_every=10",
    "train.eval_batches=2",
    "train.save_every=10",
    "train.log_every=1",
    "train.precision=fp32",
)


def _documents(names: tuple[str, ...]) -> str:
    sources = [inspect.getsource(importlib.import_module(name)).strip("\n") for name in names]
    return f"\n{EOS}\n".join(sources) + "\n"  # the data stage's document separator


def _train_tokenizer(text: str, vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
    return tokenizer.to_str()


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """data/train.txt, data/heldout.txt and tokenizer/tokenizer.json, laid out as in a run folder."""
    root = tmp_path_factory.mktemp("corpus")
    train, heldout = _documents(TRAIN_MODULES), _documents(HELDOUT_MODULES)
    vocab_size = load_config([]).model.vocab_size
    files = {
        LAYOUT.train_text: train,
        LAYOUT.heldout_text: heldout,
        LAYOUT.tokenizer: _train_tokenizer(train, vocab_size),
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


def tokenize_text(cfg, run_dir: Path) -> None:
    """data/*.tokens.safetensors from the run folder's text, as the tokenize stage writes them."""
    from tokenizers import Tokenizer

    from slmc.stages import tokenize

    tokenizer = Tokenizer.from_file(str(run_dir / LAYOUT.tokenizer))
    for split in ("train", "heldout"):
        tokenize.tokenize_split(cfg, run_dir, split, tokenizer, None, {}, tokenize.Counts())


def _make_run(corpus: Path, run_dir: Path, overrides) -> Path:
    for rel in (LAYOUT.train_text, LAYOUT.heldout_text, LAYOUT.tokenizer):
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(corpus / rel, run_dir / rel)
    cfg = load_config([*FAST, *overrides])
    tokenize_text(cfg, run_dir)
    (run_dir / LAYOUT.train_script).write_text(render_train_script(cfg), encoding="utf-8")
    return run_dir


@pytest.fixture
def make_run(corpus_dir, tmp_path):
    """make_run(*overrides, name='run'): a run folder with data, tokenizer and train.py for FAST + overrides."""

    def make(*overrides: str, name: str = "run") -> Path:
        return _make_run(corpus_dir, tmp_path / name, overrides)

    return make


def _run_script(run_dir: Path, *, nproc: int | None = None, env: dict | None = None, timeout: int = 240):
    base = {k: v for k, v in os.environ.items() if k != "SLMC_STOP_AFTER_STEP"}
    full_env = {**base, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    if nproc is None:
        command = [sys.executable, LAYOUT.train_script]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={nproc}", LAYOUT.train_script]
    return subprocess.run(command, cwd=run_dir, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def run_train():
    """run_train(run_dir, nproc=None, env=None): `python train.py` (or torchrun with nproc
    processes) in the run folder, one thread per process, offline; returns the CompletedProcess."""
    return _run_script


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def trained_run(corpus_dir, tmp_path_factory) -> Path:
    """The FAST pretrain run of model=tiny, uninterrupted (reference for resume, finetune, LoRA).

    Its stdout is kept in stdout.txt inside the run folder.
    """
    run_dir = _make_run(corpus_dir, tmp_path_factory.mktemp("trained"), ())
    result = _ok(_run_script(run_dir))
    (run_dir / "stdout.txt").write_text(result.stdout, encoding="utf-8")
    return run_dir
