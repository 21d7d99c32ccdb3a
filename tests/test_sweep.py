"""Sweeps: points are checked before launch; launchers' configs compose; shared stages are claimed once."""

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slmc.cache import StageCache
from slmc.plan import PlannedStage
from slmc.stages.registry import TRAIN
from slmc.sweep import check_points, split_sweep


def test_split_sweep_expands_points_and_leaves_hydra_settings_out():
    points = split_sweep(["-m", "compress=none,int4", "device=cpu,mobile_arm64", "hydra/launcher=local_parallel",
                          "hydra.launcher.n_jobs=2", "train.max_steps=5"])
    assert len(points) == 4
    assert all("train.max_steps=5" in p and not any(o.startswith("hydra") for o in p) for p in points)


def test_invalid_points_are_rejected_with_their_rule():
    points = check_points([["compress=fp8"], ["compress=int4"], ["device=nope"]])
    assert [p.ok for p in points] == [False, True, False]
    assert any("precision.supported_by" in problem for problem in points[0].problems)
    assert "device/nope" in points[2].problems[0]


def test_parallel_plan_only_sweep_runs_valid_points_only(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "slmc.cli", "compile", "-m", "--plan-only",
                           "hydra/launcher=local_parallel", "compress=none,int4,fp8", f"out_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 valid, 1 rejected" in proc.stdout and "compress=fp8" in proc.stdout
    runs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert len(runs) == 2 and any("-int4-" in r for r in runs) and not any("-fp8-" in r for r in runs)
    assert all((tmp_path / r / "train.py").is_file() and not (tmp_path / r / "checkpoint").exists() for r in runs)


def test_every_point_rejected_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "slmc.cli", "compile", "-m", "compress=fp8,bf16",
                           f"out_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "0 valid" in proc.stdout


def test_slurm_launcher_config_composes_to_submitit():
    proc = subprocess.run([sys.executable, "-m", "slmc.cli", "compile", "--cfg", "hydra", "hydra/launcher=slurm_gpu"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in proc.stdout
    assert "gpus_per_node: 1" in proc.stdout and "partition: gpu" in proc.stdout


def _hold(root, marker):
    stage = PlannedStage(TRAIN, "host", (), (), (), "")
    with StageCache(root).claim(stage, "k"):
        time.sleep(1.0)
        marker.write_text("first finished")


def test_claim_makes_a_second_process_wait_for_the_first(tmp_path):
    marker = tmp_path / "marker"
    first = multiprocessing.get_context("fork").Process(target=_hold, args=(tmp_path, marker))
    first.start()
    time.sleep(0.3)
    stage = PlannedStage(TRAIN, "host", (), (), (), "")
    with StageCache(tmp_path).claim(stage, "k"):
        assert marker.read_text() == "first finished"
    first.join()
    assert first.exitcode == 0 and os.path.exists(tmp_path / ".cache" / "train" / "k.lock")


def slmc(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "slmc.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_every_point_rejected_exits_2_whatever_the_launcher_and_flags(tmp_path):
    for args in (["-m", "--plan-only", "compress=fp8,bf16"],
                 ["--multirun", "hydra/launcher=local_parallel", "compress=fp8,bf16"],
                 ["-m", "compress=fp8", "device=cpu,mobile_arm64"],
                 ["-m", "train.max_steps=-1,-2"]):
        proc = slmc("compile", *args, f"out_dir={tmp_path}")
        assert proc.returncode == 2, (args, proc.stdout[-800:], proc.stderr[-800:])
        assert "0 valid" in proc.stdout and not any(tmp_path.iterdir()), args


def test_a_point_that_does_not_compose_stops_the_sweep_before_launch(tmp_path):
    proc = slmc("compile", "-m", "--plan-only", "compress=none,int3", f"out_dir={tmp_path}")
    assert proc.returncode == 2 and "compress/int3" in proc.stdout and "cannot launch" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_a_sweep_over_your_own_device(tmp_path):
    examples = Path(__file__).resolve().parents[1] / "docs" / "examples" / "conf"
    proc = slmc("compile", "-m", "--plan-only", "--config-dir", str(examples), "device=my_board,cpu",
                f"out_dir={tmp_path}")
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
    runs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert len(runs) == 2 and any("-my_board-" in r for r in runs)


@pytest.mark.parametrize("args", [
    ["compress=none,int4", "device=cpu,mobile_arm64", "train.max_steps=5"],
    ["train.lr=range(1,4)", "compress=choice(none,int8)", "run_name='a,b'"],
    ["~train.lr", "+x.y=[1,2]", "data.train_files=[a.txt,b.txt]", "seed=1,2,3"],
])
def test_split_sweep_expands_as_hydras_basic_sweeper(args):
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # the reference, in the test only
    from hydra.core.override_parser.overrides_parser import OverridesParser

    expected = [p for batch in BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
                for p in batch]
    assert split_sweep(["-m", *args, "hydra/launcher=local_parallel"]) == expected
