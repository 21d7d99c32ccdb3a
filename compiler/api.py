"""The Python API: `slmc check` and `slmc compile` as functions with typed results.

    import slmc

    found = slmc.check(overrides=["device=jetson_orin_nano", "compress=int4"])
    if found.ok:
        run = slmc.compile(overrides=["device=jetson_orin_nano", "compress=int4"])
        run.bundle, run.stages["export"].parity, run.stages["train"].last_loss

Quiet unless asked (`quiet=False` prints what the CLI prints). Problems are exceptions, all
`slmc.errors.SlmcError` with `.message`, `.where` and `.fix`: ConfigError (the overrides do not
compose or validate), CheckFailed (rule errors, listed in `.violations`; nothing was run),
StageError (a stage failed), FolderBusy (another compile is writing the same run folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .pipeline import CompileResult

if TYPE_CHECKING:
    from .rules._engine import Violation
    from .schema import SlmcConfig


@dataclass(frozen=True)
class CheckResult:
    """Every rule's verdict on one config (what `slmc check` prints)."""

    config: SlmcConfig
    violations: tuple[Violation, ...]

    @property
    def errors(self) -> list[Violation]:
        return [v for v in self.violations if v.severity == "error"]

    @property
    def warnings(self) -> list[Violation]:
        return [v for v in self.violations if v.severity == "warning"]

    @property
    def ok(self) -> bool:
        """No rule error: the config compiles (warnings allowed)."""
        return not self.errors


def _config(overrides: Sequence[str], config: SlmcConfig | None, config_dirs: Sequence[str | Path]) -> SlmcConfig:
    from .load import config_dirs as checked_dirs
    from .load import load_config

    for name, value in (("overrides", overrides), ("config_dirs", config_dirs)):
        if isinstance(value, (str, Path)):
            raise TypeError(f"{name} is a list, e.g. [{str(value)!r}], not one {type(value).__name__}")
    if config is not None:
        if overrides or config_dirs:
            raise TypeError("give overrides (and config_dirs) or config, not both")
        return config
    return load_config(list(overrides), checked_dirs(config_dirs))


def check(overrides: Sequence[str] = (), *, config: SlmcConfig | None = None,
          config_dirs: Sequence[str | Path] = ()) -> CheckResult:
    """Run every rule over the config the Hydra overrides compose (or over `config`).

    config_dirs: your own config folders (like `--config-dir`: conf/-shaped, e.g. DIR/device/my_board.yaml).
    """
    from .pipeline import check as run_checks

    cfg = _config(overrides, config, config_dirs)
    violations, _ = run_checks(cfg)
    return CheckResult(cfg, tuple(violations))


def compile(overrides: Sequence[str] = (), *, config: SlmcConfig | None = None,
            config_dirs: Sequence[str | Path] = (), plan_only: bool = False, use_cache: bool = True,
            quiet: bool = True) -> CompileResult:
    """Check, plan, generate train.py, train, export and package: `slmc compile` with these overrides.

    Returns the run folder, the plan, the files written and each stage's typed result
    (`.stages["export"]` is an ExportResult, ...). quiet=True prints nothing; train.py's
    output then goes to the run folder's train.log.
    """
    from .pipeline import compile_config

    cfg = _config(overrides, config, config_dirs)
    return compile_config(cfg, plan_only=plan_only, use_cache=use_cache, quiet=quiet)
