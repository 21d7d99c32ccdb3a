"""How slmc talks to people: violations, plans and file reports on the terminal."""

from __future__ import annotations

import sys
from functools import lru_cache

from rich.console import Console
from rich.table import Table


@lru_cache(maxsize=2)
def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # Piped output (CI logs, files) gets a wide fixed width instead of rich's 80 columns,
    # so tables keep their names readable.
    width = None if stream.isatty() else 160
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def print_violations(violations, *, title: str = "slmc check") -> None:
    out = console()
    if not violations:
        out.print(f"[green]{title}: all rules pass[/green]")
        return
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
