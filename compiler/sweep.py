"""Sweeps (`slmc compile -m ...`): check every point before any job launches.

The points are Hydra's own expansion of the overrides (its override parser and
the basic sweeper's cartesian product); slmc composes and checks each one first,
prints which points the rules reject and why, and exits 2 when none is left.
Hydra then launches the sweep; each job checks its own config again and skips
itself if rejected (jobs may run in other processes, so nothing else is handed
over). Valid points share stages through the stage cache, so a compress × device
sweep trains once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import ConfigError, SlmcError


@dataclass(frozen=True)
class Point:
    overrides: tuple[str, ...]
    problems: tuple[str, ...]
    composes: bool = True

    @property
    def ok(self) -> bool:
        return not self.problems


def _is_hydra_setting(override: str) -> bool:
    """hydra/launcher=..., hydra.launcher.n_jobs=...: how the sweep runs, not part of a point (the search
    path is: every point is composed with it)."""
    name = override.lstrip("+~").split("=", 1)[0]
    return (name == "hydra" or name.startswith(("hydra.", "hydra/"))) and name != "hydra.searchpath"


def split_sweep(args: Sequence[str]) -> list[list[str]]:
    """Every point of a sweep as its list of overrides, in the order Hydra's basic sweeper runs them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    overrides = [a for a in args if ("=" in a or a.startswith("~")) and not a.startswith("-")
                 and not _is_hydra_setting(a)]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise ConfigError(str(exc).strip(), where="sweep",
                          fix="see `slmc compile --help` for the override syntax (key=a,b sweeps a key)") from None
    axes = []
    for override in parsed:
        key = override.get_key_element()
        if not override.is_sweep_override():
            axes.append([f"{key}={override.get_value_element_as_str()}"])
        elif override.is_discrete_sweep():
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            raise ConfigError(f"{override.input_line}: Hydra's basic sweeper takes lists, choice() and range(), "
                              "not interval()", where=key, fix="list the values to try, e.g. train.lr=1e-3,3e-3")
    return [list(point) for point in itertools.product(*axes)]


def check_points(points: list[list[str]], extra_dirs: Sequence[Path] = ()) -> list[Point]:
    from .load import compose_raw, validate
    from .pipeline import check

    checked = []
    for overrides in points:
        try:
            raw = compose_raw(overrides, extra_dirs)
        except SlmcError as exc:
            checked.append(Point(tuple(overrides), (exc.render().splitlines()[0],), composes=False))
            continue
        try:
            violations, _ = check(validate(raw))
            problems = tuple(f"{v.rule}: {v.message}" for v in violations if v.severity == "error")
        except SlmcError as exc:
            problems = (exc.render().splitlines()[0],)
        checked.append(Point(tuple(overrides), problems))
    return checked


def print_summary(points: list[Point]) -> None:
    from rich.markup import escape

    from .console import console

    rejected = [p for p in points if not p.ok]
    console().print(f"[bold]sweep: {len(points)} point(s), {len(points) - len(rejected)} valid, "
                    f"{len(rejected)} rejected by the rules before launch[/bold]")
    for p in rejected:
        console().print(f"  [red]rejected[/red] {escape(' '.join(p.overrides))}")
        for problem in p.problems:
            console().print(f"      {problem}", markup=False)
