"""Sweeps (`slmc compile -m ...`): check every point before any job launches.

Hydra expands the sweep; slmc composes and checks each point first, prints
which points the rules reject and why, and lets Hydra launch only the valid
ones (a rejected point's job is skipped). Valid points share stages through
the stage cache, so a compress × device sweep trains once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import SlmcError

REJECTED_ENV = "SLMC_SWEEP_REJECTED"
SEP = "\x1f"  # between points in the environment variable (overrides never contain it)


@dataclass(frozen=True)
class Point:
    overrides: tuple[str, ...]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def split_sweep(args: list[str]) -> list[list[str]]:
    """Every point of a sweep as its list of overrides (Hydra's own expansion)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    # Hydra's own settings (hydra/launcher=..., hydra.launcher.n_jobs=...) are not part of a point.
    overrides = [a for a in args if "=" in a and not a.startswith(("-", "hydra.", "hydra/", "+hydra", "~hydra"))]
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [point for batch in BasicSweeper.split_arguments(parsed, None) for point in batch]


def check_points(points: list[list[str]]) -> list[Point]:
    from .load import load_config
    from .pipeline import check

    checked = []
    for overrides in points:
        try:
            violations, _ = check(load_config(overrides))
            problems = tuple(f"{v.rule}: {v.message}" for v in violations if v.severity == "error")
        except SlmcError as exc:
            problems = (exc.render().splitlines()[0],)
        checked.append(Point(tuple(overrides), problems))
    return checked


def point_key(overrides) -> str:
    return " ".join(sorted(overrides))


def print_summary(points: list[Point]) -> None:
    from .console import console

    rejected = [p for p in points if not p.ok]
    console().print(f"[bold]sweep: {len(points)} point(s), {len(points) - len(rejected)} valid, "
                    f"{len(rejected)} rejected by the rules before launch[/bold]")
    for p in rejected:
        console().print(f"  [red]rejected[/red] {' '.join(p.overrides)}", markup=True)
        for problem in p.problems:
            console().print(f"      {problem}", markup=False)


def mark_rejected(points: list[Point]) -> None:
    """Tell the job function (possibly in another process) which points to skip."""
    os.environ[REJECTED_ENV] = SEP.join(point_key(p.overrides) for p in points if not p.ok)


def is_rejected(task_overrides) -> bool:
    rejected = os.environ.get(REJECTED_ENV, "")
    return bool(rejected) and point_key(task_overrides) in rejected.split(SEP)
