"""`slmc compile` under Hydra's own entry point, for Hydra's flags (--cfg, -m, --info, ...).

Each job (one, or each point of a multirun sweep) validates its composed
config with the same schema and runs the same pipeline as plain `slmc compile`.
"""

from __future__ import annotations

import sys

from .errors import SlmcError


def _job(dict_cfg) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from .load import validate
    from .pipeline import compile_config
    from .sweep import is_rejected

    task = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    if is_rejected(task):
        print(f"slmc: skipped (rejected before launch): {' '.join(task)}", file=sys.stderr)
        return

    raw = OmegaConf.to_container(dict_cfg, resolve=True, throw_on_missing=True)
    try:
        compile_config(validate(raw))
    except SlmcError as exc:
        # Hydra would print a traceback and exit 1; a person gets the message and exit 2.
        print(f"slmc: error: {exc.render()}", file=sys.stderr)
        sys.exit(exc.exit_code)


def run_hydra(args: list[str]) -> int:
    import hydra

    from .load import conf_dir

    if "-m" in args or "--multirun" in args:
        from .sweep import check_points, mark_rejected, print_summary, split_sweep

        points = check_points(split_sweep(args))
        print_summary(points)
        if not any(p.ok for p in points):
            return 2
        mark_rejected(points)

    saved = sys.argv
    sys.argv = ["slmc compile", *args]
    try:
        hydra.main(config_path=str(conf_dir()), config_name="config", version_base=None)(_job)()
    finally:
        sys.argv = saved
    return 0
