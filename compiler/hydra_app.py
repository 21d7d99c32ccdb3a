"""`slmc compile` under Hydra's own entry point, for Hydra's flags (--cfg, -m, --info, ...).

Each job (one, or each point of a multirun sweep) validates its composed
config with the same schema and runs the same pipeline as plain `slmc compile`.
"""

from __future__ import annotations

import os
import sys

from .errors import SlmcError


# Flags reach each job through the environment: Hydra's joblib launcher runs jobs in
# worker processes that re-import this module.
PLAN_ONLY_ENV, NO_CACHE_ENV = "SLMC_PLAN_ONLY", "SLMC_NO_CACHE"


def _job(dict_cfg) -> None:
    from hydra.core.hydra_config import HydraConfig

    from .load import validate
    from .pipeline import compile_config
    from .rules.provenance import resolve_container
    from .sweep import is_rejected

    task = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    if is_rejected(task):
        print(f"slmc: skipped (rejected before launch): {' '.join(task)}", file=sys.stderr)
        return

    raw = resolve_container(dict_cfg)  # resolved, plus the keys read from the environment
    try:
        compile_config(validate(raw), plan_only=os.environ.get(PLAN_ONLY_ENV) == "1",
                       use_cache=os.environ.get(NO_CACHE_ENV) != "1")
    except SlmcError as exc:
        # Hydra would print a traceback and exit 1; a person gets the message and exit 2.
        print(f"slmc: error: {exc.render()}", file=sys.stderr)
        sys.exit(exc.exit_code)


def run_hydra(args: list[str], *, plan_only: bool = False, use_cache: bool = True) -> int:
    import hydra

    from .load import conf_dir

    if "-m" in args or "--multirun" in args:
        from .sweep import check_points, mark_rejected, print_summary, split_sweep

        points = check_points(split_sweep(args))
        print_summary(points)
        if not any(p.ok for p in points):
            return 2
        mark_rejected(points)

    os.environ[PLAN_ONLY_ENV] = "1" if plan_only else "0"
    os.environ[NO_CACHE_ENV] = "0" if use_cache else "1"
    saved = sys.argv
    sys.argv = ["slmc compile", *args]
    try:
        hydra.main(config_path=str(conf_dir()), config_name="config", version_base=None)(_job)()
    finally:
        sys.argv = saved
    return 0
