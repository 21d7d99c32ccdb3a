"""train.tracking: the generated train.py sends its metrics records to TensorBoard or MLflow (local
file stores in the run folder) and CONFIG as parameters; a recipe without tracking has none of it;
a tracker that is not installed is a check-time error (a warning when training runs elsewhere)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from slmc.layout import LAYOUT
from slmc.load import load_config
from slmc.render_train import render_train_script

SHORT = ("train.max_steps=4", "train.eval_every=2", "train.save_every=4", "train.warmup_steps=1")


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / LAYOUT.metrics).read_text().splitlines() if line.strip()]


def series(run_dir: Path, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in records(run_dir) if key in r}


def ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def test_only_a_tracking_recipe_holds_tracking_code():
    plain = render_train_script(load_config([]))
    assert "Tracker" not in plain and "tensorboard" not in plain.lower() and "mlflow" not in plain.lower()
    board = render_train_script(load_config(["train.tracking=tensorboard"]))
    assert "class Tracker" in board and "SummaryWriter" in board and "mlflow" not in board
    flow = render_train_script(load_config(["train.tracking=mlflow"]))
    assert "class Tracker" in flow and "import mlflow" in flow and "SummaryWriter" not in flow


def test_tensorboard_event_files_hold_the_metrics_records(make_run, run_train):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = make_run(*SHORT, "train.tracking=tensorboard")
    ok(run_train(run_dir))
    logdir = run_dir / LAYOUT.tensorboard
    assert any(p.name.startswith("events.out.tfevents") for p in logdir.iterdir())
    events = EventAccumulator(str(logdir))
    events.Reload()
    for key in ("loss", "eval_ppl", "lr"):
        logged = {e.step: e.value for e in events.Scalars(key)}
        assert logged.keys() == series(run_dir, key).keys(), key
        for step, value in series(run_dir, key).items():  # event files store float32
            assert math.isclose(logged[step], value, rel_tol=1e-6), (key, step)
    (config,) = events.Tensors("config/text_summary")  # add_text: CONFIG as flattened parameters
    assert '"TRAIN.kind": "pretrain"' in config.tensor_proto.string_val[0].decode()


@pytest.mark.slow  # mlflow's import and its SQLite store's migrations take ~30 s of CPU
def test_mlflow_store_holds_the_metrics_and_config(make_run, run_train):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run_dir = make_run(*SHORT, "train.tracking=mlflow", "train.lr=0.0025")
    ok(run_train(run_dir))
    store = run_dir / LAYOUT.mlruns
    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("slmc").experiment_id])
    assert run.info.run_name == "train" and run.info.status == "FINISHED"
    assert run.data.params["TRAIN.lr"] == "0.0025" and run.data.params["TRAIN.kind"] == "pretrain"
    for key in ("loss", "eval_ppl"):
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
        assert history == pytest.approx(series(run_dir, key), rel=1e-9), key


def test_a_missing_tracker_package_is_an_error_here_and_a_warning_for_other_nodes(monkeypatch):
    import importlib.util

    from slmc.pipeline import check

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    (here,) = [v for v in check(load_config(["train.tracking=mlflow"]))[0] if v.rule == "train.tracking_installed"]
    assert here.severity == "error" and "pip install mlflow" in here.fix and here.paths == ("train.tracking",)
    (there,) = [v for v in check(load_config(["train.tracking=mlflow", "host.nodes=2"]))[0]
                if v.rule == "train.tracking_installed"]
    assert there.severity == "warning" and "cluster" in there.message
    assert not [v for v in check(load_config(["train.tracking=tensorboard"]))[0] if v.rule == "train.tracking_installed"] \
        or real("tensorboard") is None
