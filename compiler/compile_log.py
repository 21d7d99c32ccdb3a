"""compile.log: what a compile showed on the console, and each stage's time, kept in the run folder.

The console is rich's; `recording()` turns on its own record buffer for one compile (rich
keeps what it printed, styles stripped on export), so the log holds exactly the lines a user
saw, without colour codes. A quiet compile (the Python API) shows nothing: its log says so and
still lists the stage timings, which are taken from the stages' results.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

from . import console as out
from .stages import progress
from .stages.base import Results


# True inside a compile that runs within another compile's stage (the draft run, stages.draft):
# the console buffer is the outer compile's, so the inner one neither restarts nor drains it.
_INNER = contextvars.ContextVar("slmc_inner_compile", default=False)


@contextlib.contextmanager
def inner() -> Iterator[None]:
    """A compile inside this block is part of the running one: its console lines stay in the outer log."""
    token = _INNER.set(True)
    try:
        yield
    finally:
        _INNER.reset(token)


@contextlib.contextmanager
def recording() -> Iterator[None]:
    """Record what the console prints inside the block (earlier output of this process is dropped)."""
    if _INNER.get():
        yield
        return
    console = out.console()
    was = console.record
    console.record = True
    console.export_text(clear=True)
    try:
        yield
    finally:
        console.record = was


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Nothing is recorded inside the block: a live spinner's frames are not lines a user keeps."""
    console = out.console()
    was = console.record
    console.record = False
    try:
        yield
    finally:
        console.record = was


def text(results: Results | None, failure: BaseException | None = None) -> str:
    """The log: the recorded console text, then the stage timings and how the compile ended."""
    inside = _INNER.get()
    shown = "" if inside else out.console().export_text(clear=True, styles=False)
    lines = ["# slmc compile log: what the console showed, then the stage timings"]
    if inside:
        lines.append("(compiled inside another compile: its console lines are in that run's compile.log)")
    elif progress.is_quiet():
        lines.append("(a quiet compile: the console showed nothing; train.py's output is in train.log)")
    lines.append(shown.rstrip("\n"))
    if results is not None and len(results):
        lines.append("stage timings (seconds; 'cache' = restored from the stage cache):")
        for name in results:
            result = results[name]
            seconds = "-" if result.seconds is None else f"{result.seconds:.2f}"
            lines.append(f"  {name:<14} {seconds:>10}{'  cache' if result.cached else ''}")
    if failure is not None:
        lines.append(f"compile failed: {type(failure).__name__}: {failure}")
    return "\n".join(line for line in lines if line) + "\n"
