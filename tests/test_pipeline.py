"""The compile pipeline around the stages: check before plan, typed results between stages, the
run folder's lock, leftovers of a killed compile, the Python API, and what a compile shows.

Stages here are small registered-style `Stage` objects (files of a few bytes), so execute,
the cache and the display are exercised in seconds; the real stages run in test_compile_e2e.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import slmc
from slmc.errors import CheckFailed, ConfigError, FolderBusy, StageError
from slmc.layout import LAYOUT
from slmc.load import load_config
from slmc.pipeline import Checked, compile_config
from slmc.plan import make_plan
from slmc.stages import progress
from slmc.stages.base import MODEL, ModelResult, Results, Stage, StageResult

# ----------------------------------------------------------------------------- small stages


@dataclass(kw_only=True)
class Text(StageResult):
    chars: int


@dataclass(kw_only=True)
class Model(ModelResult):
    made_from: str | None  # the model it read: what the previous stage handed on


def run_text(cfg, run_dir: Path, results: Results) -> Text:
    (run_dir / "notes.txt").write_text("abc")
    return Text(chars=3)


def run_first_model(cfg, run_dir: Path, results: Results) -> Model:
    (run_dir / "work").mkdir(exist_ok=True)
    (run_dir / "work" / "one.onnx").write_text("model one")
    return Model(onnx="work/one.onnx", made_from=None)


def run_next_model(cfg, run_dir: Path, results: Results) -> Model:
    source = results.model_path(run_dir)  # a typed field of the results, not a scan of dicts
    (run_dir / "work" / "two.onnx").write_text(source.read_text() + " -> two")
    with progress.step("rewriting the model"):
        pass
    return Model(onnx="work/two.onnx", made_from=results.model)


TEXT = Stage("text", Text, run=run_text, describe=lambda cfg: "write notes",
             consumes=lambda cfg: (), produces=lambda cfg: ("notes.txt",))
FIRST = Stage("first", Model, run=run_first_model, describe=lambda cfg: "make a model",
              consumes=lambda cfg: ("notes.txt",), model_out="work/one.onnx")
NEXT = Stage("next", Model, run=run_next_model, describe=lambda cfg: "rewrite it",
             consumes=lambda cfg: (MODEL,), model_out="work/two.onnx")
SMALL = (TEXT, FIRST, NEXT)


def checked(tmp_path: Path, stages=SMALL) -> Checked:
    cfg = load_config([f"out_dir={tmp_path / 'out'}"])
    run_dir = tmp_path / "out" / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    return Checked(cfg, (), make_plan(cfg, "run", stages=stages), run_dir)


def test_each_stage_returns_its_typed_result_and_the_next_reads_the_current_model(tmp_path, capsys):
    from slmc.execute import execute

    plan = checked(tmp_path)
    results = execute(plan, plan.run_dir, use_cache=False)
    assert list(results) == ["text", "first", "next"]
    assert isinstance(results[TEXT], Text) and results[TEXT].chars == 3
    assert results[NEXT].made_from == "work/one.onnx" and results.model == "work/two.onnx"
    assert (plan.run_dir / "work" / "two.onnx").read_text() == "model one -> two"
    assert all(r.seconds is not None and r.seconds >= 0 and not r.cached for r in results.values())
    assert json.loads(json.dumps(results.to_dict()))["next"] == {
        "onnx": "work/two.onnx", "made_from": "work/one.onnx", "seconds": results[NEXT].seconds, "cached": False}
    out = capsys.readouterr().out
    for name in ("text", "first", "next"):  # each stage's duration on the console
        assert f"stage {name} done in " in out
    assert "  rewriting the model: " in out  # a long step's duration (no terminal: one line when done)


def test_a_cached_rerun_restores_the_typed_results(tmp_path, capsys):
    from slmc.execute import execute

    plan = checked(tmp_path)
    first = execute(plan, plan.run_dir)
    (plan.run_dir / "work" / "two.onnx").unlink()
    again = execute(plan, plan.run_dir)
    assert all(r.cached for r in again.values()) and type(again[NEXT]) is Model
    assert again[NEXT].made_from == first[NEXT].made_from and again.model == "work/two.onnx"
    assert (plan.run_dir / "work" / "two.onnx").read_text() == "model one -> two"  # restored output
    assert capsys.readouterr().out.count("reused from the stage cache") == 3


def test_a_stage_that_returns_the_wrong_type_is_named(tmp_path):
    from slmc.execute import execute

    liar = Stage("liar", Model, run=run_text, describe=lambda cfg: "", consumes=lambda cfg: (),
                 produces=lambda cfg: ("notes.txt",))
    plan = checked(tmp_path, (liar,))
    with pytest.raises(StageError, match="stage 'liar' returned Text, not Model"):
        execute(plan, plan.run_dir, use_cache=False)


# ----------------------------------------------------------------------------- check before plan


def test_a_config_with_rule_errors_is_never_planned(tmp_path, capsys):
    cfg = load_config(["init=pretrained", "train=finetune", f"out_dir={tmp_path}"])
    with pytest.raises(CheckFailed) as caught:
        compile_config(cfg, plan_only=True)
    assert [v.rule for v in caught.value.violations if v.severity == "error"] == ["init.path_required"]
    assert "bug" not in caught.value.render() and not any(tmp_path.iterdir())
    assert "init.path_required" in capsys.readouterr().out  # the violations were printed


def test_the_cli_names_the_missing_path_not_a_planner_bug(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "slmc.cli", "compile", "init=pretrained", "train=finetune",
                           f"out_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "init.path_required" in proc.stdout and "init.path" in proc.stdout
    assert "planner" not in proc.stdout + proc.stderr and "nothing was run" in proc.stderr


# ----------------------------------------------------------------------------- the run folder's lock


def _hold_lock(run_dir: str, ready) -> None:
    from slmc import writer

    with writer.exclusive(Path(run_dir), LAYOUT.lock):
        ready.set()
        signal.pause()  # until killed


@pytest.fixture
def held_run_folder(tmp_path):
    """(overrides, run folder) with another process holding the run folder's lock; kill() ends it."""
    overrides = [f"out_dir={tmp_path}", "run_name=r"]
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(run_dir), ready))
    holder.start()
    assert ready.wait(30)
    yield overrides, run_dir, holder
    if holder.is_alive():
        holder.kill()
    holder.join()


def test_a_second_compile_into_the_same_run_folder_is_refused(held_run_folder):
    overrides, run_dir, holder = held_run_folder
    with pytest.raises(FolderBusy) as caught:
        compile_config(load_config(overrides), plan_only=True)
    assert caught.value.where == str(run_dir.resolve()) and "another slmc process" in caught.value.message
    assert "wait for it to finish" in caught.value.fix and caught.value.exit_code == 75
    assert not (run_dir / LAYOUT.config).exists()  # refused before writing anything
    holder.kill()  # SIGKILL: the kernel drops the lock with the process
    holder.join()
    result = compile_config(load_config(overrides), plan_only=True)
    assert (result.run_dir / LAYOUT.config).is_file()


def test_the_cli_refuses_with_exit_75(held_run_folder):
    overrides, run_dir, _ = held_run_folder
    proc = subprocess.run([sys.executable, "-m", "slmc.cli", "compile", "--plan-only", *overrides],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 75, proc.stderr
    assert "another slmc process is writing this run folder" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- leftovers of a killed compile


def test_leftovers_of_a_killed_compile_are_removed_by_the_next(tmp_path, capsys):
    """kill -9 while packaging leaves `.bundle.<random>.partial/` (a full model copy), and a killed
    atomic write `.<name>.<random>.tmp`: the next compile of the run folder deletes them."""
    overrides = [f"out_dir={tmp_path}", "run_name=r"]
    run_dir = tmp_path / "r"
    partial = run_dir / ".bundle.k2j4_9xq.partial"
    (partial / "model.onnx").parent.mkdir(parents=True)
    (partial / "model.onnx").write_bytes(b"\0" * 4096)
    (run_dir / "tokenizer").mkdir()
    tmp_file = run_dir / "tokenizer" / ".tokenizer.json.abcdefgh.tmp"
    tmp_file.write_text("half")
    mine = [run_dir / ".my.partial", run_dir / "notes.partial", run_dir / ".notes.txt"]  # not slmc's names
    for path in mine:
        path.write_text("the user's")
    compile_config(load_config(overrides), plan_only=True)
    assert not partial.exists() and not tmp_file.exists()
    assert all(p.read_text() == "the user's" for p in mine)
    assert "removed 2 temporary file(s) left by an interrupted compile" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the Python API


def test_check_returns_typed_violations():
    found = slmc.check(overrides=["init=pretrained", "train=finetune"])
    assert isinstance(found, slmc.CheckResult) and not found.ok
    assert [v.rule for v in found.errors] == ["init.path_required"] and found.config.init.kind == "pretrained"
    assert slmc.check(overrides=["device=cpu"]).ok
    assert slmc.check(config=load_config(["compress=int4"])).ok


def test_check_refuses_what_is_not_a_config():
    with pytest.raises(ConfigError):
        slmc.check(overrides=["device=nope"])
    with pytest.raises(TypeError, match="overrides is a list"):
        slmc.check(overrides="device=cpu")
    with pytest.raises(TypeError, match="not both"):
        slmc.check(overrides=["device=cpu"], config=load_config([]))


def test_check_reads_your_own_config_folders(tmp_path):
    """config_dirs is `--config-dir`: a device of one's own, chosen by name."""
    import yaml

    from slmc.load import conf_dir

    cpu = yaml.safe_load((conf_dir() / "device" / "cpu.yaml").read_text())
    (tmp_path / "device").mkdir()
    (tmp_path / "device" / "my_board.yaml").write_text(yaml.safe_dump({**cpu, "name": "my_board"}))
    found = slmc.check(overrides=["device=my_board"], config_dirs=[tmp_path])
    assert found.config.device.name == "my_board"
    with pytest.raises(ConfigError):
        slmc.check(overrides=["device=my_board"])
    with pytest.raises(TypeError, match="config_dirs is a list"):
        slmc.check(overrides=["device=my_board"], config_dirs=tmp_path)


def test_compile_is_quiet_unless_asked(tmp_path, capfd):
    result = slmc.compile(overrides=[f"out_dir={tmp_path}", "run_name=quiet"], plan_only=True)
    assert capfd.readouterr() == ("", "")
    assert isinstance(result, slmc.CompileResult) and result.run_dir == (tmp_path / "quiet").resolve()
    assert set(result.files) == {LAYOUT.config, LAYOUT.plan, LAYOUT.train_script} and result.report.is_file()
    assert result.plan.names()[0] == "data" and len(result.stages) == 0 and result.bundle is None
    loud = slmc.compile(overrides=[f"out_dir={tmp_path}", "run_name=loud"], plan_only=True, quiet=False)
    out = capfd.readouterr().out
    assert "plan: loud" in out and f"report: {loud.report}" in out


def test_compile_raises_check_failed_quietly(tmp_path, capfd):
    with pytest.raises(CheckFailed) as caught:
        slmc.compile(overrides=["init=pretrained", "train=finetune", f"out_dir={tmp_path}"])
    assert caught.value.violations and capfd.readouterr() == ("", "")


def test_import_slmc_stays_light():
    code = ("import sys, slmc; print(sorted(m for m in ('slmc.api', 'slmc.pipeline', 'torch', 'pydantic') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- the display


def test_a_long_step_is_live_on_a_terminal(monkeypatch):
    from rich.console import Console

    from slmc import console as out

    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=100, highlight=False)
    monkeypatch.setattr(out, "console", lambda stderr=False: terminal)
    with progress.step("quantizing", total=3) as advance:
        for _ in range(3):
            advance()
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())  # without the terminal's control codes
    assert "quantizing" in shown and "3/3" in shown  # rich's bar with its count
    assert re.search(r"\r  quantizing: \d+\.\d s\n$", shown), shown  # then the duration line


def test_quiet_shows_nothing(capsys):
    with progress.quiet():
        with progress.step("exporting"):
            progress.stage_finished("export", 1.0)
        assert progress.is_quiet()
    assert not progress.is_quiet() and capsys.readouterr() == ("", "")


def test_a_failed_step_leaves_no_duration_line(capsys):
    with pytest.raises(RuntimeError):
        with progress.step("exporting"):
            raise RuntimeError("boom")
    assert "exporting" not in capsys.readouterr().out

