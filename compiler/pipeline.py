"""The compile pipeline: load -> check -> plan -> render -> execute.

Each step is a function over frozen values; only `writer` touches the disk and
only `execute` runs stages. `compile_config` is what `slmc compile`, each point
of a Hydra multirun and the Python API (`slmc.compile`) call.
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
from .stages.base import Results


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
    """Check first, then plan: a config with rule errors raises CheckFailed and is never planned
    (the plan of such a config can be inconsistent: an input the user has not named yet)."""
    violations, rule_ids = check(cfg)
    if any(v.severity == "error" for v in violations):
        raise CheckFailed(violations)
    name = run_name(cfg)
    warnings = [v for v in violations if v.severity == "warning"]
    plan = make_plan(cfg, name, rule_ids, warnings)
    return Checked(cfg, tuple(violations), plan, Path(cfg.out_dir).expanduser() / name)


def resolved_config_yaml(cfg: SlmcConfig, provenance: dict | None = None) -> str:
    """The resolved config (no interpolations left), serialised from data; `provenance` (the plan's:
    each checkpoint's local folder and Hub commit) follows as its own top-level section."""
    # allow_unicode=False: PyYAML writes some characters (U+0085) raw, and they read back changed.
    data = cfg.model_dump(mode="json")
    if provenance:
        data["provenance"] = provenance
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=False, width=100)
    return f"# resolved by slmc; config sha256 {config_hash(cfg)}\n{body}"


def render(checked: Checked) -> dict[str, str]:
    """Every generated text file of a run, in memory."""
    from .render_train import render_train_script

    files = {
        LAYOUT.config: resolved_config_yaml(checked.cfg, checked.plan.provenance()),
        LAYOUT.plan: json.dumps(checked.plan.to_dict(), indent=2, sort_keys=False) + "\n",
        LAYOUT.train_script: render_train_script(checked.cfg, checked.plan.checkpoints),
    }
    if checked.cfg.host.nodes > 1:  # several machines: the Slurm launcher of train.py
        from .render_launch import render_launch_slurm

        files[LAYOUT.launch_slurm] = render_launch_slurm(checked.cfg)
    return files


@dataclass(frozen=True)
class CompileResult:
    """What one compile made: the run folder, its plan, the files written and each stage's typed result."""

    run_dir: Path
    plan: Plan
    warnings: tuple          # the rule warnings (a config with errors is never compiled)
    files: dict[str, str]    # generated file -> create / identical / overwrite
    stages: Results          # typed results of the stages run now, in order (empty for plan_only)
    report: Path             # report.md

    @property
    def bundle(self) -> Path | None:
        """The bundle this compile packaged, or None (plan only, or no package stage ran)."""
        return self.run_dir / LAYOUT.bundle if "package" in self.stages else None


def compile_config(cfg: SlmcConfig, *, plan_only: bool = False, use_cache: bool = True,
                   quiet: bool = False, run_dir: Path | None = None) -> CompileResult:
    """Check, plan, render and (unless plan_only) execute one config.

    quiet: print nothing (train.py's output goes to the run folder's train.log). Only one
    compile at a time writes a run folder: a second one is refused (FolderBusy).
    run_dir: write there instead of out_dir/<run name> (a rebuild of the same config, slmc.rebuild).
    """
    from .compile_log import recording
    from .stages import progress

    with progress.quiet(quiet), recording():
        return _compile(cfg, plan_only=plan_only, use_cache=use_cache, run_dir=run_dir)


def _compile(cfg: SlmcConfig, *, plan_only: bool, use_cache: bool, run_dir: Path | None = None) -> CompileResult:
    from . import compile_log
    from . import console as out
    from . import writer
    from .execute import execute
    from .report import write_run_report
    from .stages import progress

    loud = not progress.is_quiet()
    try:
        checked = check_and_plan(cfg)
    except CheckFailed as exc:
        if loud:
            out.print_violations(exc.violations)
        raise
    if loud:
        out.print_violations(checked.violations)
        out.print_plan(checked.plan)
    files = render(checked)
    run_dir = writer.prepare_run_dir(run_dir or checked.run_dir).resolve()
    with writer.exclusive(run_dir, LAYOUT.lock, what="this run folder"):
        stale = writer.remove_stale_stagings(run_dir)
        if stale:
            progress.say(f"removed {len(stale)} temporary file(s) left by an interrupted compile: "
                         + ", ".join(p.relative_to(run_dir).as_posix() for p in stale))
        written = writer.write_files(run_dir, files)
        progress.say(f"run folder: {run_dir}")
        if loud:
            out.print_file_report(written)
        results: Results | None = None
        try:
            results = Results() if plan_only else execute(checked, run_dir, use_cache=use_cache)
            report = write_run_report(run_dir, results)
            progress.say(f"report: {report}")
            result = CompileResult(run_dir, checked.plan, tuple(checked.violations), written, results, report)
            _check_gate(result)  # exit 3 after the bundle and report are written; compile.log says why
        except BaseException as exc:  # the log of a failed compile is the one most needed
            writer.write_text(run_dir, LAYOUT.compile_log, compile_log.text(results, exc))
            raise
        writer.write_text(run_dir, LAYOUT.compile_log, compile_log.text(results))
    return result


def _check_gate(result: CompileResult) -> None:
    """A failed regression gate (stage `gate`, targets.baseline) ends the compile with exit code 3, after
    the bundle and report.md are written; the error carries the table and the CompileResult (`.result`)."""
    from .compare.gate import table_text
    from .errors import GateFailed

    gate = result.stages.get("gate")
    if gate is None or gate.passed:
        return
    error = GateFailed("regression gate failed against " + gate.baseline + ":\n" + table_text(gate.rows)
                       + "".join(f"\n  {line}" for line in gate.failures), where="targets",
                       fix=f"see {result.report}; relax a tolerance in targets.* or fix the regression "
                           "(the bundle is kept, its manifest records the verdict)")
    error.result = result
    raise error
