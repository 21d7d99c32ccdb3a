"""host.nodes: the run folder's launch_slurm.sh, and a 2-"node" rendezvous on one machine.

Two torchrun agents (`--nnodes=2 --nproc-per-node=1`, c10d rendezvous on localhost, gloo) run
the generated train.py in the same run folder, as two nodes sharing a file system would; their
training must equal one process reading the same global batch (model=tiny, 6 steps).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slmc.layout import LAYOUT
from slmc.load import load_config
from slmc.render_launch import render_launch_slurm

from .conftest import _make_run, _ok, _run_script

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agents(run_dir: Path, nodes: int, timeout: int = 240) -> list[subprocess.CompletedProcess]:
    """`nodes` torchrun agents of one job, started together, each with one train.py process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    env.pop("SLMC_STOP_AFTER_STEP", None)
    port = _free_port()
    command = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", "--nproc-per-node=1",
               "--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{port}", "--rdzv-id=slmc-test",
               LAYOUT.train_script]
    procs = [subprocess.Popen(command, cwd=run_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(nodes)]
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        results.append(subprocess.CompletedProcess(command, proc.returncode, out, err))
    return results


def _losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / LAYOUT.metrics).read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / LAYOUT.final_checkpoint / "model.safetensors"))


def _same_training(single: Path, nodes: Path, steps: int) -> None:
    a, b = _losses(single), _losses(nodes)
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    for step in a:  # the DDP test's tolerance: float summation order only
        assert b[step] == pytest.approx(a[step], rel=1e-5), step
    reference = _weights(single)
    for name, tensor in _weights(nodes).items():
        torch.testing.assert_close(tensor, reference[name], rtol=1e-4, atol=1e-5, msg=name)


def _two_nodes_vs_one_process(corpus_dir, tmp_path, steps: int) -> None:
    """2 nodes x 1 process x batch 4 = the 8 sequences one process x batch 8 reads per step."""
    schedule = (f"train.max_steps={steps}", f"train.eval_every={steps}", f"train.save_every={steps}",
                f"train.warmup_steps={steps // 3}")
    single = _make_run(corpus_dir, tmp_path / "single", (*schedule, "train.batch_size=8"))
    nodes = _make_run(corpus_dir, tmp_path / "nodes", (*schedule, "train.batch_size=4", "host.nodes=2"))
    assert (nodes / LAYOUT.train_script).read_text().count("import torch.distributed as dist") == 1
    _ok(_run_script(single))
    results = _agents(nodes, 2)
    for result in results:
        _ok(result)
    assert "2 process(es) on cpu (DDP)" in "".join(r.stdout for r in results)
    _same_training(single, nodes, steps)


def test_two_nodes_by_c10d_rendezvous_match_one_process(corpus_dir, tmp_path):
    """The DDP test's schedule (6 steps, 2 of warm-up): ~30 s of CPU, mostly three process start-ups.
    (At 2 steps of full learning rate, AdamW's first updates, lr x g / |g|, turn summation-order
    noise in near-zero gradients into weight differences above the tolerance.)"""
    _two_nodes_vs_one_process(corpus_dir, tmp_path, steps=6)


def test_launch_slurm_starts_torchrun_on_every_node_with_a_c10d_rendezvous(tmp_path):
    cfg = load_config(["host.nodes=3", "host.gpus_per_node=4", "host.accelerator=cuda", "host.precisions=[bf16]"])
    assert cfg.host.num_processes == 4 and cfg.host.world_size == 12
    text = render_launch_slurm(cfg)
    assert "#SBATCH --nodes=3\n" in text and "#SBATCH --gpus-per-node=4\n" in text
    assert "NNODES=3\n" in text and "NPROC_PER_NODE=4\n" in text
    assert '--rdzv-backend=c10d' in text and '--rdzv-endpoint="$HEAD_NODE:$RDZV_PORT"' in text
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1' in text
    assert "--gpus-per-node" not in render_launch_slurm(load_config(["host.nodes=2"]))
    if shutil.which("bash"):
        script = tmp_path / "launch_slurm.sh"
        script.write_text(text)
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_gpus_per_node_sets_num_processes_and_old_configs_keep_theirs():
    from pydantic import ValidationError

    from slmc.schema import HostConfig

    assert HostConfig().world_size == 1 and HostConfig(num_processes=2).world_size == 2
    assert HostConfig(nodes=2, gpus_per_node=8).num_processes == 8
    assert HostConfig(num_processes=8, gpus_per_node=8).world_size == 8
    with pytest.raises(ValidationError, match="disagree"):
        HostConfig(num_processes=2, gpus_per_node=8)
