"""The train stage: run the generated train.py in the run folder, as a user would."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from ..errors import StageError
from ..layout import LAYOUT
from . import progress
from .base import Results
from .checkpoints import fetch_weights, named_checkpoints, resolved
from .results import TrainResult


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
    train.py runs. prctl is looked up before the fork: the child only calls it. Under
    torchrun the child is torchrun, which stops its workers on SIGTERM
    (tests/stages/test_train_dies_with_slmc.py).
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


def fetch_checkpoints(cfg, run_dir: Path) -> None:
    """The weights of every checkpoint train.py loads, present in the folder it was rendered with.

    train.py reads a Hub model from its cache snapshot and never touches the network, so its
    safetensors are fetched here (huggingface_hub's progress bars), at the commit the plan
    resolved. init=prune: train.py loads the pruned folder; the prune stage read the source.
    """
    for key in named_checkpoints(cfg):
        if key == "init.path" and cfg.init.kind == "prune":
            continue
        record = resolved(cfg, run_dir, key)
        if record.revision is not None:
            progress.say(f"  {key}: safetensors of {record.repo_id} at commit {record.revision[:12]} "
                         "(Hugging Face cache)")
        fetch_weights(record)


def run_train(cfg, run_dir: Path, results: Results) -> TrainResult:
    """Run the generated train.py exactly as a user would, in the run folder.

    train.py dies with slmc (see _die_with_parent); Ctrl+C reaches both through the terminal.
    A quiet compile (the Python API) sends its output to train.log in the run folder.
    """
    if cfg.host.nodes > 1:  # rule host.multi_node said so at check time
        raise StageError(f"host.nodes={cfg.host.nodes}: train.py trains on {cfg.host.nodes} machines, which this "
                         "compile cannot start", where=str(run_dir / LAYOUT.launch_slurm),
                         fix=f"cd {run_dir} && sbatch {LAYOUT.launch_slurm}; when it has finished, compile again with "
                             f"init=pretrained init.path={run_dir / LAYOUT.final_checkpoint} train=none")
    fetch_checkpoints(cfg, run_dir)
    command = train_command(cfg)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    rerun = f"rerun `cd {run_dir} && {' '.join(command)}` to resume from the last checkpoint"
    if progress.is_quiet():
        with open(run_dir / LAYOUT.train_log, "ab") as log:
            proc = subprocess.run(command, cwd=run_dir, env=env, preexec_fn=_die_with_parent(),
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        seen = f"read {run_dir / LAYOUT.train_log}"
    else:
        proc = subprocess.run(command, cwd=run_dir, env=env, preexec_fn=_die_with_parent())
        seen = "read its output above"
    if proc.returncode != 0:
        raise StageError(f"train.py exited with code {proc.returncode}", where=str(run_dir / LAYOUT.train_script),
                         fix=f"{seen}; {rerun}")
    metrics = [json.loads(line) for line in (run_dir / LAYOUT.metrics).read_text().splitlines() if line.strip()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    evals = [m["eval_ppl"] for m in metrics if m.get("eval_ppl") is not None]
    return TrainResult(command=" ".join(command), first_loss=losses[0] if losses else None,
                       last_loss=losses[-1] if losses else None, final_eval_ppl=evals[-1] if evals else None)
