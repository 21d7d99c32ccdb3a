"""The `slmc` command line.

`compile` and `check` take Hydra overrides (`device=jetson_orin_nano
train.max_steps=50`) and `--config-dir DIR` for your own option files; Hydra's
own flags (`--cfg job`, `-m`, `--info`, `-sc install=bash`, ...) are handed to
Hydra itself so they keep working. Every `SlmcError` becomes a message and its
exit code (2 for config and check errors, 1 for a failing stage, 3 for a failed
regression gate); no traceback. `slmc diff` exits 0 (identical) or 1 (different).
"""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .errors import CheckFailed, ConfigError, SlmcError

HYDRA_FLAGS = {"--cfg", "-c", "--info", "-i", "--resolve", "--package", "-p", "-m", "--multirun",
               "--hydra-help", "--shell-completion", "-sc", "--config-name", "-cn",
               "--config-path", "-cp", "--experimental-rerun"}
"""Flags `slmc compile` hands to `hydra.main` (`--config-dir` is slmc's own, shared with check)."""

RUNTIME_COMMANDS = {
    "run": "generate text from a bundle, streamed to stdout",
    "bench": "prefill latency, decode tokens/s and peak memory of a bundle",
    "verify": "a bundle's hashes and its compatibility with this machine",
}
"""Commands of slmc.runtime (runtime/cli.py parses their arguments; a device runs them without the compiler)."""

DESCRIPTION = """\
A compiler for the lifecycle of small language models: Hydra configs -> checks ->
a generated train.py and a verified ONNX inference bundle.

  slmc check device=jetson_orin_nano compress=int8     every violation, with its fix (exit 2)
  slmc compile device=cpu train.max_steps=50            train, export and package a bundle
  slmc compile -m compress=none,int8,int4               a sweep (each point checked before launch)
  slmc compile compress=int8 targets.baseline=B targets.max_ppl_increase=0.05   regression gate (exit 3)
  slmc diff generated/a generated/b --json              what changed between two runs or bundles
  slmc check --config-dir my_conf device=my_board       your own device (see docs/examples/conf)
  eval "$(slmc compile -sc install=bash)"               tab completion for commands, groups and keys
"""

OVERRIDES_HELP = "Hydra overrides: group=option (device=cpu) and key=value (train.max_steps=50)"
CONFIG_DIR_HELP = ("a folder of your own option files laid out like conf/ (e.g. DIR/device/my_board.yaml), "
                   "searched after the shipped ones; repeatable")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Lists the commands once: without the line argparse puts above them (their metavar)."""

    def _format_action(self, action: argparse.Action) -> str:
        text = super()._format_action(action)
        if isinstance(action, argparse._SubParsersAction):
            text = text.split("\n", 1)[1]
        return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slmc", description=DESCRIPTION, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"slmc {__version__}")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    compile_p = sub.add_parser(
        "compile", help="check, plan, generate train.py, train, export and package a bundle",
        description="Compile a config into a run folder: train.py, checkpoints and a verified bundle.",
        epilog="Hydra's own flags are handed to Hydra: -m/--multirun (sweeps), --cfg job|hydra|all, --info, "
               "--resolve, -p PACKAGE, -sc install=bash (tab completion), --hydra-help.")
    compile_p.add_argument("--plan-only", action="store_true", help="validate, plan and render only; run nothing")
    compile_p.add_argument("--no-cache", action="store_true", help="rerun every stage instead of reusing cached outputs")
    compile_p.add_argument("--from", dest="from_run", metavar="RUN",
                           help="rebuild an earlier run folder's resolved config.yaml into RUN-rebuild (stage cache off) "
                                "and report which bundle files differ and why (rebuild.json); only run_name= and "
                                "out_dir= may be given with it")
    _config_dir_option(compile_p)
    compile_p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)

    check_p = sub.add_parser("check", help="run every rule; print all violations (exit 2 on errors)",
                             description="Check a config against every rule without running anything.")
    check_p.add_argument("--json", action="store_true", help='print {"ok": ..., "violations": [...]} instead')
    _config_dir_option(check_p)
    check_p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)

    devices_p = sub.add_parser("devices", help="the device catalogue")
    devices_p.add_argument("--json", action="store_true", help="print the profiles as JSON")
    _config_dir_option(devices_p)

    explain_p = sub.add_parser("explain", help="the fields of a config section and what they mean")
    explain_p.add_argument("group", nargs="?", default=None, help="a section (train, device, ...); none lists them")
    _config_dir_option(explain_p)

    report_p = sub.add_parser("report", help="report.md of a run, or a sweep's table + Pareto plot")
    report_p.add_argument("folder", help="a run folder (has plan.json) or a sweep's out_dir")
    report_p.add_argument("--no-measure", action="store_true", help="do not benchmark bundles on this machine")
    report_p.add_argument("--runs", type=int, default=3, help="benchmark runs per bundle (median)")

    diff_p = sub.add_parser("diff", help="what changed between two bundles or run folders (exit 0 same, 1 different)",
                            description="Compare two bundles or run folders by content: config paths, architecture "
                                        "and precision, files by sha256, per-stage metrics, size. A is the old side.")
    diff_p.add_argument("a", help="a bundle folder or a run folder")
    diff_p.add_argument("b", help="a bundle folder or a run folder")
    diff_p.add_argument("--measure", action="store_true",
                        help="also measure both bundles here, side by side: perplexity, speed, memory")
    diff_p.add_argument("--text", default=None, metavar="FILE",
                        help="held-out text for --measure (default: A's run's data/heldout.txt, else B's)")
    diff_p.add_argument("--runs", type=int, default=3, help="interleaved benchmark runs per bundle for --measure")
    diff_p.add_argument("--json", action="store_true", help="print the differences as JSON (for CI)")
    lineage_p = sub.add_parser("lineage", help="the chain of runs a bundle or run folder continued from",
                               description="Print a bundle's or run folder's lineage, newest first, back to its "
                                           "first scratch, Hub or local checkpoint.")
    lineage_p.add_argument("folder", help="a bundle folder (has manifest.json) or a run folder")
    lineage_p.add_argument("--json", action="store_true", help='print {"chain": [...]} instead')

    for name, text in RUNTIME_COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)  # dispatched to slmc.runtime before parsing
    return parser


def _config_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-dir", "-cd", action="append", default=[], metavar="DIR", help=CONFIG_DIR_HELP)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in RUNTIME_COMMANDS:
            from .runtime.cli import main as runtime_main

            return runtime_main(argv)
        if argv[:1] == ["compile"] and argv[1:2] and argv[1].split("=")[0] in ("-sc", "--shell-completion"):
            argv = argv[1:]  # `slmc compile -sc install=bash`: the same script as `slmc -sc install=bash`
        if argv and argv[0].split("=")[0] in ("-sc", "--shell-completion"):
            from .completion import shell_completion

            return shell_completion(argv, _parser())
        if argv and argv[0] == "compile" and any(a.split("=")[0] in HYDRA_FLAGS for a in argv[1:]):
            return _compile_with_hydra(argv[1:])
        args = _parser().parse_args(argv)
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


def _compile_with_hydra(args: list[str]) -> int:
    """`slmc compile` with Hydra's flags: slmc's own flags are taken out, the rest goes to hydra.main."""
    from .hydra_app import run_hydra
    from .load import config_dirs

    rest, dirs = [], []
    items = iter(args)
    for arg in items:
        if arg in ("--config-dir", "-cd"):
            dirs.append(next(items, ""))
        elif arg.startswith(("--config-dir=", "-cd=")):
            dirs.append(arg.split("=", 1)[1])
        elif arg not in ("--plan-only", "--no-cache"):
            rest.append(arg)
    return run_hydra(rest, plan_only="--plan-only" in args, use_cache="--no-cache" not in args,
                     extra_dirs=config_dirs(dirs))


def _dispatch(args) -> int:
    if args.command is None:
        _parser().print_help()
        return 2
    from .load import config_dirs

    dirs = config_dirs(getattr(args, "config_dir", []))
    if args.command == "compile" and args.from_run:
        from .rebuild import rebuild

        if args.plan_only or args.no_cache:
            raise ConfigError("--from rebuilds a run: it runs every stage, with the stage cache off", where="--from",
                              fix="drop --plan-only / --no-cache (or plan a new config without --from)")

        rebuild(args.from_run, args.overrides)
        return 0
    if args.command == "lineage":
        from .lineage_show import print_lineage

        return print_lineage(args.folder, as_json=args.json)
    if args.command == "compile":
        from .load import load_config
        from .pipeline import compile_config

        compile_config(load_config(args.overrides, dirs), plan_only=args.plan_only, use_cache=not args.no_cache)
        return 0
    if args.command == "check":
        return _check(args.overrides, dirs, as_json=args.json)
    if args.command == "devices":
        from .options_catalogue import print_devices

        return print_devices(as_json=args.json, extra_dirs=dirs)
    if args.command == "explain":
        from .options_catalogue import print_explain

        return print_explain(args.group, dirs)
    if args.command == "diff":
        return _diff(args)
    return _report(args)


def _diff(args) -> int:
    """0 when A and B are identical in content, 1 when they differ; bad input is an SlmcError (2)."""
    from pathlib import Path

    from .compare.diff import diff
    from .compare.diff_text import render_text

    text = None
    if args.text is not None:
        try:
            text = Path(args.text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SlmcError(f"cannot read the text: {exc}", where="--text", fix="pass a UTF-8 text file") from None
    if args.runs < 1:
        raise SlmcError(f"--runs must be at least 1, got {args.runs}", where="--runs", fix="pass --runs 3")
    result = diff(args.a, args.b, measure=args.measure, text=text, repeats=args.runs)
    print(json.dumps(result, indent=2) if args.json else render_text(result))
    return 0 if result["identical"] else 1


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


def _check(overrides: list[str], dirs, *, as_json: bool) -> int:
    from .load import load_config
    from .rules._engine import run_rules  # what pipeline.check runs, without the planning modules

    try:
        cfg = load_config(overrides, dirs)
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
