"""Render launch_slurm.sh: the Slurm job that starts train.py on host.nodes machines (torchrun, c10d)."""

from __future__ import annotations

from .render import render_template
from .schema import SlmcConfig


def launch_context(cfg: SlmcConfig) -> dict:
    """Integers only: nodes, processes per node, the world size, and whether each process has a GPU."""
    host = cfg.host
    return {"nodes": host.nodes, "per_node": host.num_processes, "world": host.world_size,
            "gpus": host.accelerator == "cuda"}


def render_launch_slurm(cfg: SlmcConfig) -> str:
    """The text of the run folder's launch_slurm.sh (written when host.nodes > 1)."""
    return render_template("launch_slurm.sh.j2", launch_context(cfg))
