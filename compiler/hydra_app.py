"""`slmc compile` under Hydra's own entry point (`hydra.main`), for Hydra's flags and sweeps.

`-m` sweeps, `--cfg job`, `--info`, `-sc install=bash`: Hydra parses them, composes
the same conf/ with the same schema defaults and search path as `slmc check`, and
its launchers run the jobs (here, in joblib workers, or as Slurm jobs). Each job
validates its config with the schema and runs the same pipeline as plain
`slmc compile`.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .errors import CheckFailed, ConfigError, SlmcError

SWEEP_FLAGS = ("-m", "--multirun")


@dataclass(frozen=True)
class CompileJob:
    """What Hydra calls once per job, with the flags of `slmc compile` it needs. A module-level frozen
    dataclass, so Hydra's joblib and submitit launchers can pickle it to their workers."""

    plan_only: bool = False
    use_cache: bool = True

    def __call__(self, dict_cfg) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
        from omegaconf import OmegaConf

        from .load import validate
        from .pipeline import check, compile_config
        from .rules.provenance import resolve_container

        hydra_cfg = HydraConfig.get()
        try:
            cfg = validate(resolve_container(dict_cfg))  # resolved, plus the keys read from the environment
            violations, _ = check(cfg)
            if any(v.severity == "error" for v in violations):
                raise CheckFailed(violations)
            compile_config(cfg, plan_only=self.plan_only, use_cache=self.use_cache)
        except (ConfigError, CheckFailed) as exc:
            if hydra_cfg.mode != RunMode.MULTIRUN:
                _fail(exc)
            # The sweep's summary listed this point and why before anything launched.
            print(f"slmc: skipped (rejected before launch): {' '.join(hydra_cfg.overrides.task)}", file=sys.stderr)
        except SlmcError as exc:
            _fail(exc)


def _fail(exc: SlmcError) -> None:
    # Hydra would print a traceback and exit 1; a person gets the message and the error's exit code.
    print(f"slmc: error: {exc.render()}", file=sys.stderr)
    sys.exit(exc.exit_code)


def run_hydra(args: list[str], *, plan_only: bool = False, use_cache: bool = True,
              extra_dirs: Sequence[Path] = ()) -> int:
    """`slmc compile ARGS` where ARGS hold Hydra's flags; a sweep is checked point by point first."""
    if any(a in SWEEP_FLAGS for a in args):
        from .sweep import check_points, print_summary, split_sweep

        points = check_points(split_sweep(args), extra_dirs)
        print_summary(points)
        if not any(p.ok for p in points):
            return 2
        if not all(p.composes for p in points):
            # Hydra's launcher composes every point itself and stops the sweep at the first that fails.
            print("slmc: error: Hydra cannot launch a sweep holding points that do not compose (above); "
                  "fix or drop those values", file=sys.stderr)
            return 2
    hydra_main(args, CompileJob(plan_only=plan_only, use_cache=use_cache), extra_dirs)
    return 0


def hydra_main(args: Sequence[str], job=None, extra_dirs: Sequence[Path] = ()) -> None:
    """Run `hydra.main` over slmc's conf/ with `args` as its command line."""
    import hydra

    from .compose import conf_dir, register_schema_defaults, search_path_overrides

    register_schema_defaults()
    main = hydra.main(config_path=str(conf_dir()), config_name="config", version_base=None)(job or CompileJob())
    with _command_line([*args, *search_path_overrides(extra_dirs)]):
        main()


@contextlib.contextmanager
def _command_line(args: Sequence[str]) -> Iterator[None]:
    """`hydra.main` reads its arguments from sys.argv and has no parameter for them; the program name
    stays the real one (Hydra's shell-completion script registers itself for that name)."""
    saved = sys.argv
    sys.argv = [saved[0] if saved else "slmc", *args]
    try:
        yield
    finally:
        sys.argv = saved
