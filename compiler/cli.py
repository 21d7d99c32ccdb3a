"""The `slmc` command line.

`compile` and `check` take Hydra overrides (`device=jetson_orin_nano
train.max_steps=50`); Hydra's own flags (`--cfg job`, `-m`, `--info`, ...)
are handed to Hydra itself so they keep working. Every `SlmcError` becomes a
message and its exit code (2 for config and check errors); no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import CheckFailed, SlmcError

HYDRA_FLAGS = {"--cfg", "-c", "--info", "-i", "--resolve", "--package", "-p", "-m", "--multirun",
               "--hydra-help", "--shell-completion", "-sc", "--config-dir", "-cd", "--config-name", "-cn",
               "--config-path", "-cp", "--experimental-rerun"}

USAGE = """slmc <command> [options] [overrides...]

commands:
  compile   check, plan, generate train.py, train, export and package a bundle
  check     run every rule; print all violations (exit 2 on errors)
  devices   the device catalogue
  explain   the fields of a config group and what they mean
  report    report.md of a run, or a sweep's table + Pareto plot (sweep_report.md, pareto.png)
  run       generate text from a bundle            (slmc.runtime)
  bench     prefill / decode speed of a bundle     (slmc.runtime)
  verify    hashes and compatibility of a bundle   (slmc.runtime)
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slmc", usage=USAGE)
    sub = parser.add_subparsers(dest="command", metavar="command", prog="slmc")
    compile_p = sub.add_parser("compile", help="compile a config into train.py and a bundle")
    compile_p.add_argument("--plan-only", action="store_true", help="validate, plan and render only; run nothing")
    compile_p.add_argument("--no-cache", action="store_true", help="rerun every stage instead of reusing cached outputs")
    compile_p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. device=cpu compress=int4")
    check_p = sub.add_parser("check", help="run every rule and report all violations")
    check_p.add_argument("--json", action="store_true", help="machine-readable output")
    check_p.add_argument("overrides", nargs="*")
    devices_p = sub.add_parser("devices", help="the device catalogue")
    devices_p.add_argument("--json", action="store_true")
    report_p = sub.add_parser("report", help="report.md of a run folder, or a sweep folder's table and Pareto plot")
    report_p.add_argument("folder", help="a run folder (has plan.json) or a sweep's out_dir")
    report_p.add_argument("--no-measure", action="store_true", help="do not benchmark bundles on this machine")
    report_p.add_argument("--runs", type=int, default=3, help="benchmark runs per bundle (median)")
    explain_p = sub.add_parser("explain", help="fields of a config group")
    explain_p.add_argument("group", nargs="?", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("run", "bench", "verify"):
        from .runtime.cli import main as runtime_main

        return runtime_main(argv)
    if argv and argv[0] == "compile" and any(a.split("=")[0] in HYDRA_FLAGS for a in argv[1:]):
        from .hydra_app import run_hydra

        rest = [a for a in argv[1:] if a not in ("--plan-only", "--no-cache")]
        return run_hydra(rest, plan_only="--plan-only" in argv, use_cache="--no-cache" not in argv)
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except CheckFailed as exc:
        print(f"slmc: {exc.message.splitlines()[0]}", file=sys.stderr)  # the violations were printed above
        return exc.exit_code
    except SlmcError as exc:
        print(f"slmc: error: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("slmc: interrupted; rerun the same command to continue", file=sys.stderr)
        return 130


def _dispatch(args) -> int:
    if args.command == "compile":
        from .load import load_config
        from .pipeline import compile_config

        compile_config(load_config(args.overrides), plan_only=args.plan_only, use_cache=not args.no_cache)
        return 0
    if args.command == "check":
        return _check(args.overrides, as_json=args.json)
    if args.command == "devices":
        from .catalogue import print_devices

        return print_devices(as_json=args.json)
    if args.command == "report":
        return _report(args)
    if args.command == "explain":
        from .catalogue import print_explain

        return print_explain(args.group)
    _parser().print_help()
    return 2


def _report(args) -> int:
    from pathlib import Path

    folder = Path(args.folder).expanduser().resolve()
    if (folder / "plan.json").is_file():
        from .report import write_run_report

        path = write_run_report(folder, {})
    else:
        from .sweep_report import write_sweep_report

        path = write_sweep_report(folder, measure=not args.no_measure, runs=args.runs)
    print(f"report: {path}")
    return 0


def _check(overrides: list[str], *, as_json: bool) -> int:
    from .load import load_config
    from .rules._engine import run_rules  # what pipeline.check runs, without the planning modules

    try:
        cfg = load_config(overrides)
    except SlmcError as exc:
        if not as_json:
            raise
        payload = {"rule": "config.schema", "severity": "error", "paths": [exc.where] if exc.where else [],
                   "message": exc.message, "fix": exc.fix or ""}
        print(json.dumps({"ok": False, "violations": [payload]}, indent=2))
        return exc.exit_code
    violations = run_rules(cfg)  # builds the CheckContext from the files the config names
    ok = not any(v.severity == "error" for v in violations)
    from .checkpoint import effective_model_name  # what is built: the checkpoint's family-size with init=pretrained

    arch = effective_model_name(cfg)
    if as_json:
        print(json.dumps({"ok": ok, "architecture": arch, "violations": [v.to_dict() for v in violations]}, indent=2))
    else:
        from .console import print_violations

        print_violations(violations, title=f"slmc check (checkpoint: {arch})" if arch != cfg.model.name else "slmc check")
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
