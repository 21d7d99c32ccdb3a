"""The compile pipeline: load -> check -> plan -> render -> execute.

Each step is a function over frozen values; only `writer` touches the disk and
only `execute` runs stages. `compile_config` is what `slmc compile` (and each
point of a Hydra multirun) calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import CheckFailed
from .layout import LAYOUT
from .load import config_hash, run_name
from .plan import Plan, make_plan
from .schema import SlmcConfig


@dataclass(frozen=True)
class Checked:
    cfg: SlmcConfig
    violations: tuple
    plan: Plan
    run_dir: Path

    @property
    def errors(self) -> list:
        return [v for v in self.violations if v.severity == "error"]


def check(cfg: SlmcConfig) -> tuple[list, list[str]]:
    """Every rule over the config (and the local files it names); also the ids of the rules run."""
    from .rules._engine import REGISTRY, run_rules
    from .rules.context import CheckContext

    return run_rules(cfg, CheckContext.from_config(cfg)), sorted(REGISTRY.rules)


def check_and_plan(cfg: SlmcConfig) -> Checked:
    violations, rule_ids = check(cfg)
    name = run_name(cfg)
    warnings = [v for v in violations if v.severity == "warning"]
    plan = make_plan(cfg, name, rule_ids, warnings)
    return Checked(cfg, tuple(violations), plan, Path(cfg.out_dir).expanduser() / name)


def resolved_config_yaml(cfg: SlmcConfig) -> str:
    """The resolved config (no interpolations left), serialised from data."""
    # allow_unicode=False: PyYAML writes some characters (U+0085) raw, and they read back changed.
    body = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=False, width=100)
    return f"# resolved by slmc; config sha256 {config_hash(cfg)}\n{body}"


def render(checked: Checked) -> dict[str, str]:
    """Every generated text file of a run, in memory."""
    from .stages.train_script import render_train_script

    return {
        LAYOUT.config: resolved_config_yaml(checked.cfg),
        LAYOUT.plan: json.dumps(checked.plan.to_dict(), indent=2, sort_keys=False) + "\n",
        LAYOUT.train_script: render_train_script(checked.cfg),
    }


def compile_config(cfg: SlmcConfig, *, plan_only: bool = False, use_cache: bool = True) -> dict:
    """Check, plan, render and (unless plan_only) execute one config. Returns a summary."""
    from . import console as out
    from .execute import execute
    from .writer import prepare_run_dir, write_files

    checked = check_and_plan(cfg)
    out.print_violations(checked.violations)
    if checked.errors:
        raise CheckFailed(checked.violations)
    out.print_plan(checked.plan)
    files = render(checked)
    run_dir = prepare_run_dir(checked.run_dir).resolve()
    report = write_files(run_dir, files)
    out.console().print(f"run folder: {run_dir}")
    out.print_file_report(report)
    summary = {"run_dir": str(run_dir), "files": report, "stages": {}}
    if not plan_only:
        summary["stages"] = execute(checked, run_dir, use_cache=use_cache)
    from .report import write_run_report

    summary["report"] = str(write_run_report(run_dir, summary["stages"]))
    out.console().print(f"report: {summary['report']}")
    return summary
