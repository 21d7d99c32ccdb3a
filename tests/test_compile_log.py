"""compile.log: every compile leaves in its run folder what the console showed, and the stage timings.

The stages are test_pipeline's small ones (files of a few bytes), so a whole compile runs in seconds.
"""

from __future__ import annotations

import pytest

import slmc.pipeline as pipeline
from slmc.errors import StageError
from slmc.layout import LAYOUT
from slmc.load import load_config
from slmc.pipeline import compile_config
from slmc.stages.base import Stage

from .test_pipeline import SMALL, Text, checked


def _compile(tmp_path, monkeypatch, stages=SMALL, **kwargs):
    planned = checked(tmp_path, stages)
    monkeypatch.setattr(pipeline, "check_and_plan", lambda cfg: planned)
    return compile_config(load_config([f"out_dir={tmp_path / 'out'}"]), **kwargs)


def test_the_log_holds_what_the_console_showed_and_each_stage_time(tmp_path, monkeypatch, capsys):
    result = _compile(tmp_path, monkeypatch)
    shown = capsys.readouterr().out
    log = (result.run_dir / LAYOUT.compile_log).read_text(encoding="utf-8")
    for line in ("plan: run", "stage text: write notes", "stage next done in", "run folder:", "report:",
                 "rewriting the model:"):
        assert line in shown and line in log, line
    assert "\x1b[" not in log  # no colour codes
    timings = log.split("stage timings (seconds")[1].splitlines()[1:]
    assert [row.split()[0] for row in timings] == ["text", "first", "next"]
    for row, name in zip(timings, ("text", "first", "next")):
        assert float(row.split()[1]) == pytest.approx(result.stages[name].seconds, abs=0.01)


def test_each_compile_logs_only_itself_and_a_quiet_one_says_so(tmp_path, monkeypatch, capsys):
    _compile(tmp_path, monkeypatch)
    result = _compile(tmp_path, monkeypatch, quiet=True)
    assert capsys.readouterr().out.count("plan: run") == 1
    log = (result.run_dir / LAYOUT.compile_log).read_text(encoding="utf-8")
    assert "a quiet compile: the console showed nothing" in log and "plan: run" not in log
    assert "  text " in log and "  next " in log  # the timings still


def test_a_failed_compile_logs_the_failure(tmp_path, monkeypatch, capsys):
    def fail(cfg, run_dir, results):
        raise StageError("the disk caught fire")

    broken = Stage("broken", Text, run=fail, describe=lambda cfg: "fail", consumes=lambda cfg: (),
                   produces=lambda cfg: ("never.txt",))
    with pytest.raises(StageError):
        _compile(tmp_path, monkeypatch, stages=(SMALL[0], broken))
    log = (tmp_path / "out" / "run" / LAYOUT.compile_log).read_text(encoding="utf-8")
    assert "stage text done in" in log and "stage broken: fail" in log
    assert "compile failed: StageError: stage 'broken' failed: the disk caught fire" in log
