"""Shell completion: `eval "$(slmc compile -sc install=bash)"` (or `slmc -sc install=bash`).

Hydra writes the shell script; it completes by running `slmc -sc query=bash` with the
command line in COMP_LINE. slmc answers for its own layer (commands, flags, the
sections `explain` takes) and hands override words of `compile` and `check` to Hydra's
completion (groups, options, keys and their values, over the same conf/, schema
defaults and --config-dir folders the command itself composes). An empty answer lets
the shell complete file names.
"""

from __future__ import annotations

import argparse
import os

from .errors import ConfigError

OVERRIDE_COMMANDS = ("compile", "check")
DIR_FLAGS = ("--config-dir", "-cd")
SHELLS = ("bash", "zsh", "fish")  # Hydra's completion plugins


def shell_completion(argv: list[str], parser: argparse.ArgumentParser) -> int:
    """`slmc -sc install=bash|zsh`, `uninstall=...`, or `query=...` (what the installed script runs)."""
    request = argv[0].split("=", 1)[1] if "=" in argv[0] else (argv[1] if len(argv) > 1 else "")
    action, _, shell = request.partition("=")
    if action not in ("install", "uninstall", "query") or shell not in SHELLS:
        raise ConfigError(f"unknown shell-completion request {request!r}", where="-sc",
                          fix='install it with: eval "$(slmc -sc install=bash)" (shells: '
                              f"{', '.join(SHELLS)}; zsh runs bashcompinit first)")
    if action != "query":
        from .hydra_app import hydra_main

        hydra_main(["-sc", request])  # Hydra's install/uninstall script, or its own error for a bad request
        return 0
    line = os.environ.get("COMP_LINE", "")
    point = os.environ.get("COMP_POINT", "")
    if point.isdigit():
        line = line[: int(point)]
    answer = complete(line, parser)
    if answer is None:
        _ask_hydra(line, shell or "bash")
    else:
        print(" ".join(answer))
    return 0


def complete(line: str, parser: argparse.ArgumentParser) -> list[str] | None:
    """slmc's own candidates for the last word of `line`, or None when Hydra completes it."""
    words = line.split()[1:]  # without the program name
    new_word = not words or line.endswith((" ", "\t"))
    current = "" if new_word else words[-1]
    before = words if new_word else words[:-1]
    commands = _subparsers(parser)
    if not before:
        return sorted(c for c in [*commands, "--help", "--version"] if c.startswith(current))
    command = commands.get(before[0])
    if command is None or (before[-1] in DIR_FLAGS):
        return []  # a folder name, or nothing slmc knows: the shell completes file names
    if current.startswith("-"):
        flags = [f for action in command._actions for f in action.option_strings]
        if before[0] == "compile":
            from .cli import HYDRA_FLAGS

            flags += sorted(HYDRA_FLAGS)
        return sorted({f for f in flags if f.startswith(current)})
    if before[0] == "explain":
        from .schema import SlmcConfig

        return sorted(n for n, f in SlmcConfig.model_fields.items()
                      if hasattr(f.annotation, "model_fields") and n.startswith(current))
    if before[0] in OVERRIDE_COMMANDS:
        return None
    return []


def _ask_hydra(line: str, shell: str) -> None:
    """Hydra's completion of the override words of `line` (slmc's own flags and command left out)."""
    from .hydra_app import hydra_main

    words = line.split()
    overrides, dirs, items = [], [], iter(words[2:])
    for word in items:
        if word in DIR_FLAGS:
            dirs.append(next(items, ""))
        elif not word.startswith("-") or word in ("-m", "--multirun"):
            overrides.append(word)
    try:
        from .compose import search_path_overrides
        from .load import config_dirs

        overrides = search_path_overrides(config_dirs(dirs)) + overrides  # your options complete too
    except ConfigError:
        pass
    trailing = " " if line.endswith((" ", "\t")) else ""
    os.environ["COMP_LINE"] = " ".join([words[0], *overrides]) + trailing
    os.environ.pop("COMP_POINT", None)
    hydra_main(["-sc", f"query={shell}"])


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}

