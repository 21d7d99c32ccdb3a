"""Scale-out and tracking rules: a multi-node run is launched on the cluster, not by the compile; a
tracker train.py is asked to use is installed where it runs."""

from __future__ import annotations

import importlib.util

from ._engine import rule

_TRACKER_MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


@rule("host.multi_node", "warning")
def multi_node(rule, cfg, ctx):
    """host.nodes > 1: the compile writes train.py and launch_slurm.sh but cannot start several machines;
    its train stage stops and says how to launch the run and continue from its checkpoint."""
    h = cfg.host
    if h.nodes > 1:
        yield rule.violation(
            ("host.nodes", "host.num_processes"),
            f"host.nodes={h.nodes}: train.py is compiled for {h.nodes} nodes x {h.num_processes} process(es) "
            f"(world size {h.world_size}); the compile stops at the train stage, which this machine cannot run",
            "submit launch_slurm.sh from the run folder (sbatch launch_slurm.sh), then compile again with "
            "init=pretrained init.path=<run folder>/checkpoint train=none to export and package what it trained",
        )


@rule("train.tracking_installed")
def tracking_installed(rule, cfg, ctx):
    """train.tracking names a tracker (tensorboard, mlflow) whose package is installed where train.py runs:
    an error when the compile runs train.py here, a warning when the run goes to other nodes."""
    kind = cfg.train.tracking
    if kind == "none" or importlib.util.find_spec(_TRACKER_MODULES[kind]) is not None:
        return
    elsewhere = cfg.host.nodes > 1
    yield rule.violation(
        ("train.tracking",),
        f"train.tracking={kind} but the {kind} package is not installed in this Python "
        + ("(train.py runs on the cluster's nodes: install it there)" if elsewhere else "(train.py would stop at start)"),
        f"pip install {kind} (or pip install 'slmc[tracking]'), or set train.tracking=none",
        "warning" if elsewhere else "error",
    )
