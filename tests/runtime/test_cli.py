"""`slmc.runtime.cli.main` and `python -m slmc.runtime`: outputs and exit codes."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slmc.runtime.bench import bench
from slmc.runtime.cli import main
from slmc.runtime.errors import GenerationError

BENCH_KEYS = {"prefill_ms", "decode_tokens_per_s", "decode_ms_per_token", "session_fraction", "peak_rss_mb",
              "runs_detail", "loop", "batch", "prompt_tokens", "new_tokens"}


def test_run_streams_the_generated_text(bundle, bundle_dir, capsys):
    assert main(["run", str(bundle_dir), "--prompt", "the small model", "--max-new-tokens", "12",
                 "--threads", "1"]) == 0
    assert capsys.readouterr().out == bundle.generate("the small model", max_new_tokens=12)[0] + "\n"


def test_run_with_sampling_flags_is_reproducible(bundle, bundle_dir, capsys):
    argv = ["run", str(bundle_dir), "--prompt", "ka", "--max-new-tokens", "12", "--temperature", "0.8",
            "--top-k", "50", "--top-p", "0.95", "--repetition-penalty", "1.1", "--seed", "4", "--stop", "zz"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first
    expected = bundle.generate("ka", max_new_tokens=12, temperature=0.8, top_k=50, top_p=0.95,
                               repetition_penalty=1.1, seed=4, stop=["zz"])[0]
    assert first == expected + "\n"


def test_bad_parameter_exits_2_with_one_line(bundle_dir, capsys):
    assert main(["run", str(bundle_dir), "--prompt", "ka", "--top-p", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "top_p" in err and err.count("\n") == 1


def test_verify_ok_and_refused(bundle_dir, bundle_copy, capsys):
    assert main(["verify", str(bundle_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["files"] == 4
    (bundle_copy / "model.onnx").write_bytes(b"tampered")
    assert main(["verify", str(bundle_copy)]) == 2
    captured = capsys.readouterr()
    assert "model.onnx: sha256 does not match" in captured.err and captured.err.count("\n") == 1
    assert main(["verify", str(bundle_copy), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and "model.onnx" in report["error"]


def test_tensorrt_bundle_refused_by_run(bundle_copy, rewrite_manifest, capsys):
    rewrite_manifest(bundle_copy, lambda m: m["runtime"].update(name="tensorrt"))
    assert main(["run", str(bundle_copy), "--prompt", "ka"]) == 2
    assert "build_engine.sh" in capsys.readouterr().err
    assert main(["run", str(bundle_copy), "--prompt", "ka", "--max-new-tokens", "2", "--allow-foreign"]) == 0


def test_bench_json_prints_exactly_one_object(bundle_dir, capsys):
    argv = ["bench", str(bundle_dir), "--json", "--prompt-tokens", "8", "--new-tokens", "8", "--runs", "2",
            "--threads", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads(out)  # fails on anything but one JSON document
    assert out.count("\n") == 1 and BENCH_KEYS <= set(result)
    assert result["decode_tokens_per_s"] > 0 and result["prefill_ms"] > 0 and len(result["runs_detail"]) == 2


def test_bench_function_and_its_limits(bundle):
    result = bench(bundle, prompt_tokens=16, new_tokens=8, runs=3, batch=2, warmup=0)
    assert result["batch"] == 2 and all(run["tokens"] == 8 for run in result["runs_detail"])
    assert 0 < result["session_fraction"] <= 1
    with pytest.raises(GenerationError, match="exceeds the bundle's context"):
        bench(bundle, prompt_tokens=150, new_tokens=20)
    with pytest.raises(GenerationError, match="runs must be"):
        bench(bundle, runs=0)


def test_python_dash_m_runs_as_a_subprocess(bundle, bundle_dir):
    done = subprocess.run([sys.executable, "-m", "slmc.runtime", "run", str(bundle_dir), "--max-new-tokens", "10"],
                          input="the small model", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == bundle.generate("the small model", max_new_tokens=10)[0] + "\n"
    done = subprocess.run([sys.executable, "-m", "slmc.runtime", "verify", "/nonexistent/bundle"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "not a bundle folder" in done.stderr


def _options(command: str):
    """(flags, help) of every option and positional of `slmc COMMAND`, --help excepted."""
    from slmc.runtime.cli import _parser

    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [(a.option_strings or [a.dest], a.help) for a in sub.choices[command]._actions
            if not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("command", ["run", "bench", "verify"])
def test_every_option_has_help_text(command, capsys):
    options = _options(command)
    assert len(options) >= 3
    assert [flags for flags, text in options if not text or len(text) < 12] == []
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    shown = "".join(capsys.readouterr().out.split())  # without whitespace: argparse wraps the lines
    for flags, text in options:
        assert "".join(text.split("(default")[0].split()) in shown, flags


def test_the_threads_help_states_the_enforced_limit():
    from slmc.runtime.bundle import THREADS_PER_CORE

    (text,) = [t for flags, t in _options("run") if "--threads" in flags]
    assert f"1 to {THREADS_PER_CORE} per usable CPU core" in text


@pytest.fixture
def run_folder(bundle_dir, tmp_path) -> Path:
    """A compiler run folder as `slmc compile` leaves it: files of its own, the bundle in bundle/."""
    folder = tmp_path / "generated" / "tiny-run"
    shutil.copytree(bundle_dir, folder / "bundle")
    (folder / "config.yaml").write_text("seed: 0\n")
    (folder / "plan.json").write_text("{}\n")
    return folder


def test_run_bench_and_verify_accept_a_run_folder(bundle, run_folder, capsys):
    """`slmc run generated/<run>` once said manifest.json was missing, with bundle/ right there."""
    assert main(["run", str(run_folder), "--prompt", "ka", "--max-new-tokens", "6", "--threads", "1"]) == 0
    assert capsys.readouterr().out == bundle.generate("ka", max_new_tokens=6)[0] + "\n"
    assert main(["verify", str(run_folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bundle"] == str((run_folder / "bundle").resolve())
    assert main(["bench", str(run_folder), "--json", "--prompt-tokens", "4", "--new-tokens", "2", "--runs", "1",
                 "--threads", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["bundle"] == bundle.manifest.name


def test_a_folder_that_is_neither_a_bundle_nor_a_run_says_where_bundles_are(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "manifest.json is missing" in err and "<run>/bundle" in err
