"""How slmc talks to people: violations, plans and file reports on the terminal.

rich is imported on first use, not with this module: it costs ~20 ms, and a
passing `slmc check` whose output goes to a pipe prints one plain line.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

WIDTH = 160  # piped output's width (rich's default would be 80)


@lru_cache(maxsize=2)
def console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output (CI logs, files) gets a wide fixed width instead of rich's 80 columns,
    # so tables keep their names readable.
    width = None if stream.isatty() else WIDTH
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def _unstyled(text: str) -> bool:
    """True when rich would write `text` to stdout as it is: no terminal (so no colour), nothing
    forcing one (rich reads FORCE_COLOR, TTY_COMPATIBLE, TTY_INTERACTIVE; Jupyter), no markup, no wrap."""
    if any(os.environ.get(k) for k in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")):
        return False
    if "ipykernel" in sys.modules or "[" in text or not text.isascii() or len(text) > WIDTH:
        return False
    isatty = getattr(sys.stdout, "isatty", None)
    return isatty is not None and not isatty()


def print_violations(violations, *, title: str = "slmc check") -> None:
    if not violations:
        text = f"{title}: all rules pass"
        if _unstyled(text):
            print(text)
        else:
            console().print(f"[green]{text}[/green]")
        return
    out = console()
    errors = sum(v.severity == "error" for v in violations)
    warnings = len(violations) - errors
    out.print(f"[bold]{title}: {errors} error(s), {warnings} warning(s)[/bold]")
    for v in violations:
        colour = "red" if v.severity == "error" else "yellow"
        paths = ", ".join(v.paths) or "-"
        out.print(f"[{colour}]{v.severity:7}[/{colour}] [bold]{v.rule}[/bold]  ({paths})")
        out.print(f"         {v.message}", markup=False)
        out.print(f"         fix: {v.fix}", markup=False)


def print_plan(plan) -> None:
    from rich.table import Table

    table = Table(title=f"plan: {plan.run_name}", show_lines=False)
    for column in ("#", "stage", "runs on", "consumes", "produces"):
        table.add_column(column)
    for i, stage in enumerate(plan.stages, start=1):
        table.add_row(str(i), stage.name, stage.runs_on, ", ".join(stage.consumes) or "-", ", ".join(stage.produces))
    console().print(table)


def print_file_report(report: dict[str, str]) -> None:
    colours = {"create": "green", "identical": "dim", "overwrite": "yellow"}
    for path, status in report.items():
        console().print(f"  [{colours[status]}]{status:9}[/{colours[status]}] {path}")


def error(message: str) -> None:
    print(f"slmc: error: {message}", file=sys.stderr)
