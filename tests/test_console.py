"""Terminal output: a passing check printed without rich reads exactly as rich prints it."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from slmc.console import WIDTH, console, print_violations

COLOUR_ENV = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR")


@pytest.fixture(autouse=True)
def plain_env(monkeypatch):
    for key in COLOUR_ENV:
        monkeypatch.delenv(key, raising=False)
    console.cache_clear()
    yield
    console.cache_clear()


def rich_text(markup: str) -> str:
    buffer = io.StringIO()  # not a terminal: what rich writes to a pipe
    Console(file=buffer, width=WIDTH, highlight=False, soft_wrap=False).print(markup)
    return buffer.getvalue()


def test_passing_check_to_a_pipe_is_rich_s_text(capsys):
    print_violations([])
    assert capsys.readouterr().out == rich_text("[green]slmc check: all rules pass[/green]") \
        == "slmc check: all rules pass\n"


def test_forced_colour_goes_through_rich(capsys, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")
    print_violations([])
    out = capsys.readouterr().out
    assert "\x1b[" in out and "slmc check: all rules pass" in out


def test_markup_like_titles_go_through_rich(capsys):
    print_violations([], title="sweep [x]")
    assert capsys.readouterr().out == rich_text("[green]sweep [x]: all rules pass[/green]")
