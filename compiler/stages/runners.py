"""Stage runners: one function per plan stage, `(cfg, run_dir, results) -> metrics`.

Runners compute; they write through `slmc.writer` (or, for the training
subprocess and ONNX tools, into the run folder paths the plan declared).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .. import writer
from ..errors import StageError
from ..layout import LAYOUT
from . import data as data_stage
from . import tokenizer as tokenizer_stage


def run_data(cfg, run_dir: Path, results: dict) -> dict:
    corpus = data_stage.gather(cfg.data)
    report = writer.write_files(run_dir, corpus.files(LAYOUT))
    return {"files": report, "train_chars": corpus.info["train_chars"],
            "heldout_chars": corpus.info["heldout_chars"], "train_sha256": corpus.info["train_sha256"]}


def run_tokenizer(cfg, run_dir: Path, results: dict) -> dict:
    if cfg.data.tokenizer:
        text, source = tokenizer_stage.existing_tokenizer(cfg.data.tokenizer, "data.tokenizer"), cfg.data.tokenizer
    elif cfg.init.kind in ("pretrained", "prune") and cfg.init.path:
        text, source = tokenizer_stage.existing_tokenizer(cfg.init.path, "init.path"), cfg.init.path
    elif cfg.init.kind == "distill" and cfg.init.distill.teacher_path:
        # The student shares the teacher's tokenizer (rule distill.tokenizer_shared).
        text, source = tokenizer_stage.existing_tokenizer(cfg.init.distill.teacher_path, "init.distill.teacher_path"), cfg.init.distill.teacher_path
    else:
        train_text = (run_dir / LAYOUT.train_text).read_text(encoding="utf-8")
        text, source = tokenizer_stage.train_bpe(train_text, cfg.model.vocab_size), "trained (byte-level BPE)"
    files = {
        LAYOUT.tokenizer: text,
        LAYOUT.tokenizer_config: tokenizer_stage.tokenizer_config(text, cfg.export.max_seq_len),
    }
    return {"files": writer.write_files(run_dir, files), "source": source,
            "vocab_size": len(json.loads(text)["model"]["vocab"]) + len(json.loads(text).get("added_tokens", []))}


def train_command(cfg) -> list[str]:
    """How the generated script is launched: python, or torchrun for several processes."""
    script = LAYOUT.train_script
    if cfg.host.num_processes > 1:
        torchrun = shutil.which("torchrun") or f"{Path(sys.executable).parent}/torchrun"
        return [torchrun, "--standalone", f"--nproc_per_node={cfg.host.num_processes}", script]
    return [sys.executable, script]


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent():
    """A preexec_fn that makes the child get SIGTERM when slmc dies (Linux), else None.

    Without it, killing slmc alone (the OOM killer, `kill -9 <pid>`) leaves train.py
    running on, holding memory and racing the rerun for the same checkpoints. Linux's
    prctl(PR_SET_PDEATHSIG) is the only mechanism that also covers SIGKILL of the parent;
    subprocess has no option for it, and python-prctl, the package that wraps it, is a
    compiled dependency for one call, so libc's prctl is called through ctypes. SIGTERM,
    not SIGKILL: torchrun forwards it to its workers, and train.py's checkpoints are
    written atomically, so a stop at any moment loses at most the steps since the last.
    The signal follows the thread that forked, which waits in subprocess.run as long as
    train.py runs. prctl is looked up before the fork: the child only calls it.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent, term = os.getpid(), int(signal.SIGTERM)

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, term, 0, 0, 0)
        if os.getppid() != parent:  # slmc died before prctl took effect: nobody will signal us
            os.kill(os.getpid(), term)

    return set_death_signal


def run_train(cfg, run_dir: Path, results: dict) -> dict:
    """Run the generated train.py exactly as a user would, in the run folder.

    train.py dies with slmc (see _die_with_parent); Ctrl+C reaches both through the terminal.
    """
    command = train_command(cfg)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(command, cwd=run_dir, env=env, preexec_fn=_die_with_parent())
    if proc.returncode != 0:
        raise StageError(f"train.py exited with code {proc.returncode}", where=str(run_dir / LAYOUT.train_script),
                         fix=f"read its output above; rerun `cd {run_dir} && {' '.join(command)}` to resume from the last checkpoint")
    metrics = [json.loads(line) for line in (run_dir / LAYOUT.metrics).read_text().splitlines() if line.strip()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    evals = [m["eval_ppl"] for m in metrics if m.get("eval_ppl") is not None]
    return {"command": " ".join(command), "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None, "final_eval_ppl": evals[-1] if evals else None}


def _lazy(module: str, name: str):
    """Heavy runners import torch / onnxruntime only when they run: `slmc check` stays light."""

    def run(cfg, run_dir: Path, results: dict) -> dict:
        from importlib import import_module

        return getattr(import_module(f"slmc.stages.{module}"), f"run_{name}")(cfg, run_dir, results)

    return run


RUNNERS = {
    "data": run_data,
    "tokenizer": run_tokenizer,
    "train": run_train,
    "prune": _lazy("prune", "prune"),
    **{name: _lazy("deploy", name) for name in ("export", "optimize", "prepare_tensorrt", "compress")},
    "package": _lazy("package", "package"),
}
