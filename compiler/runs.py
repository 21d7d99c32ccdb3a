"""A run folder as a checkpoint: `init.path=<run folder>` and `init=from_run init.run=<run folder>`.

An slmc run folder (config.yaml + plan.json, see layout.py) stands for its final checkpoint,
`<run>/checkpoint`, which holds the weights, config.json, the tokenizer and its
tokenizer_config.json (with a chat template when the parent had one). `resolve_run_paths` rewrites
such a path once, when the config is loaded, so everything after it (rules, plan, train.py, the
stage cache) sees an ordinary checkpoint folder and the resolved config.yaml names the checkpoint
actually loaded. A bundle folder inside a run stands for its run. An unfinished or failed run
is refused here, naming the folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, MutableMapping

from .errors import ConfigError
from .layout import LAYOUT

INIT_KINDS = ("pretrained", "prune")
"""init kinds whose init.path may name a run folder (distill's teacher is not a lineage parent)."""


def is_run_folder(folder: Path) -> bool:
    """A folder an slmc compile wrote: its resolved config and its plan."""
    return (folder / LAYOUT.config).is_file() and (folder / LAYOUT.plan).is_file()


def run_of(path: Path) -> Path | None:
    """The run folder `path` is, or whose bundle or final checkpoint it is; None for anything else
    (also for a path the OS refuses: too long, a NUL byte; the checkpoint rules name those)."""
    try:
        if is_run_folder(path):
            return path
        if path.name in (LAYOUT.bundle, LAYOUT.final_checkpoint) and is_run_folder(path.parent):
            return path.parent
    except (OSError, ValueError):
        pass
    return None


def absolute_path(value: str) -> Path:
    """`value` made absolute (~ expanded), or as given when the OS cannot resolve it."""
    try:
        return Path(value).expanduser().resolve()
    except (OSError, ValueError, RuntimeError):  # RuntimeError: ~user that does not exist, a symlink loop
        return Path(value)


def final_checkpoint(run: Path, where: str) -> Path:
    """`run`'s final checkpoint folder, or ConfigError naming what is missing and why."""
    folder = run / LAYOUT.final_checkpoint
    missing = [name for name in ("config.json", "tokenizer.json") if not (folder / name).is_file()]
    if not folder.is_dir() or missing or not any(folder.glob("*.safetensors")):
        what = "no folder" if not folder.is_dir() else ", ".join(missing) or "no *.safetensors"
        raise ConfigError(
            f"{run} is an slmc run folder without a final checkpoint ({folder}: {what}); its compile has "
            "not finished training, or it failed",
            where=where,
            fix=f"finish that run first (rerun its compile, or `python train.py` in {run}), or continue from "
                "another run",
        )
    return folder


def resolve_run_paths(raw: MutableMapping[str, Any]) -> None:
    """Rewrite init.path in the composed config when it (or init.run) names a run folder.

    init.run (init=from_run) is the short form: init.path must then be unset or the same folder.
    Values of the wrong type are left for the schema to report.
    """
    init = raw.get("init")
    if not isinstance(init, MutableMapping):
        return
    run, path = init.get("run"), init.get("path")
    if init.get("name") == "from_run" and not run:
        raise ConfigError("init=from_run needs the run folder to continue from", where="init.run",
                          fix="set init.run=generated/<run> (a folder `slmc compile` wrote)")
    if isinstance(run, str) and run:
        if init.get("kind") not in INIT_KINDS:
            raise ConfigError(f"init.run names a run to continue from, but init.kind is {init.get('kind')!r}",
                              where="init.run", fix="use init=from_run init.run=DIR (or unset init.run)")
        folder = absolute_path(run)
        if run_of(folder) is None:
            raise ConfigError(f"{folder} is not an slmc run folder (no {LAYOUT.config} and {LAYOUT.plan})",
                              where="init.run", fix="pass a folder that `slmc compile` wrote (generated/<run>)")
        if isinstance(path, str) and path and run_of(absolute_path(path)) != run_of(folder):
            raise ConfigError(f"init.run ({run}) and init.path ({path}) name different checkpoints",
                              where="init.run, init.path", fix="set only init.run (init=from_run)")
        checkpoint = final_checkpoint(run_of(folder), "init.run")
    elif isinstance(path, str) and path and init.get("kind") in INIT_KINDS:
        found = run_of(absolute_path(path))
        if found is None:
            return
        checkpoint = final_checkpoint(found, "init.path")
    else:
        return
    raw["init"] = {**init, "path": str(checkpoint)}
