"""What a compile shows while it runs: each stage, its long steps live, and how long each took.

Export of the default model takes about a minute, and optimize, quantize and the held-out
evaluations tens of seconds: on a terminal each such step is a live line (rich's spinner,
or a bar when the number of parts is known) with its elapsed time; in a log (no terminal)
it is one line with its duration when it ends. A quiet compile (the Python API's default)
prints nothing: `quiet()` sets a context variable and rich's own `Console.quiet`.
"""

from __future__ import annotations

import contextlib
import time
from contextvars import ContextVar
from typing import Callable, Iterator

from .. import console as out

_QUIET: ContextVar[bool] = ContextVar("slmc_quiet", default=False)

Advance = Callable[..., None]


def is_quiet() -> bool:
    return _QUIET.get()


@contextlib.contextmanager
def quiet(enabled: bool = True) -> Iterator[None]:
    """Nothing on the terminal inside the block (train.py's output goes to the run's train.log)."""
    token = _QUIET.set(enabled)
    consoles = (out.console(), out.console(stderr=True))
    saved = [c.quiet for c in consoles]
    for c in consoles:
        c.quiet = enabled or c.quiet
    try:
        yield
    finally:
        for c, was in zip(consoles, saved):
            c.quiet = was
        _QUIET.reset(token)


def say(markup: str) -> None:
    if not is_quiet():
        out.console().print(markup)


def stage_started(name: str, description: str) -> None:
    from rich.markup import escape

    say(f"[bold cyan]stage {name}[/bold cyan]: {escape(description)}")


def stage_finished(name: str, seconds: float) -> None:
    say(f"[bold cyan]stage {name}[/bold cyan] done in {seconds:,.1f} s")


def stage_reused(name: str, key: str) -> None:
    say(f"[bold cyan]stage {name}[/bold cyan]: reused from the stage cache ({key[:12]})")


def stage_on_target(name: str, description: str) -> None:
    from rich.markup import escape

    say(f"[dim]stage {name}: runs on the target ({escape(description)})[/dim]")


@contextlib.contextmanager
def step(label: str, total: int | None = None) -> Iterator[Advance]:
    """One long step of a stage. Yields `advance(n=1)` for steps made of `total` parts.

    Live on a terminal (transient: it leaves one line with the step's duration); in a log,
    only that line. A step that fails leaves no line: the error says what happened.
    """
    from rich.markup import escape

    start = time.perf_counter()
    console = out.console()
    if is_quiet() or not console.is_terminal:
        yield lambda n=1: None
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        parts = (BarColumn(), MofNCompleteColumn()) if total else ()
        from ..compile_log import paused

        with paused(), Progress(SpinnerColumn(), TextColumn("  {task.description}"), *parts, TimeElapsedColumn(),
                                console=console, transient=True) as live:
            task = live.add_task(escape(label), total=total)
            yield lambda n=1: live.advance(task, n)
    say(f"  [dim]{escape(label)}: {time.perf_counter() - start:,.1f} s[/dim]")
