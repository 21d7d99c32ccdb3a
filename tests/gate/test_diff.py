"""`slmc diff`: the fp32 and int8 runs of one training differ in precision, model file and metrics
(text and --json, exit 1); a bundle and its copy are identical (exit 0); bad input exits 2."""

from __future__ import annotations

import json
import shutil

from slmc.cli import main


def _diff(capsys, *args) -> tuple[int, str]:
    code = main(["diff", *map(str, args)])
    return code, capsys.readouterr().out


def test_json_reports_precision_files_config_and_metrics(fp32_run, int8_run, capsys):
    code, out = _diff(capsys, fp32_run.run_dir, int8_run.run_dir, "--json")
    assert code == 1
    result = json.loads(out)
    assert not result["identical"]
    manifest = {r["path"]: (r["a"], r["b"]) for r in result["manifest"]}
    assert manifest["precision"] == ("fp32", "int8")
    config = {r["path"]: (r["a"], r["b"]) for r in result["config"]}
    assert config["compress.precision"] == ("fp32", "int8")
    assert config["targets.baseline"] == (None, str(fp32_run.bundle))
    assert "model.onnx" in result["files"]["changed"]
    assert "tokenizer.json" not in result["files"]["changed"]  # the same trained tokenizer, from the stage cache
    metrics = {r["path"]: r for r in result["metrics"]}
    # int8 adds a compress evaluation; the shipped graph's perplexity differs
    assert metrics["heldout_perplexity.compress"]["a"] is None
    assert metrics["heldout_perplexity.compress"]["b"] > 0
    shipped = metrics["parity.heldout_perplexity"]
    assert shipped["content"] and shipped["a"] != shipped["b"] and shipped["change"].endswith("%")
    assert result["size"]["b"] < result["size"]["a"] and result["size"]["ratio"] < 1
    # B's own gate is summarised, not diffed as metrics
    assert result["gate"]["a"] is None and result["gate"]["b"]["passed"] is True
    assert not any(path.startswith("regression_gate") for path in metrics)
    # unchanged parts are not listed: the training is shared
    assert "train.last_loss" not in metrics and "heldout_perplexity.checkpoint" not in metrics


def test_text_names_the_same_differences(fp32_run, int8_run, capsys):
    code, out = _diff(capsys, fp32_run.bundle, int8_run.bundle)
    assert code == 1
    assert 'precision: fp32 -> int8' in out
    assert "changed  model.onnx" in out
    assert "heldout_perplexity.compress: null ->" in out
    assert "compress.precision: fp32 -> int8" in out  # the bundle's run folder holds config.yaml
    assert out.rstrip().endswith("different")


def test_identical_bundles_exit_0(fp32_run, capsys, tmp_path):
    copy = shutil.copytree(fp32_run.bundle, tmp_path / "bundle")
    code, out = _diff(capsys, fp32_run.bundle, copy)
    assert code == 0 and out.rstrip().endswith("identical in content")
    code, out = _diff(capsys, fp32_run.run_dir, fp32_run.run_dir, "--json")
    assert code == 0 and json.loads(out)["identical"]


def test_a_changed_file_in_a_copy_is_found_by_hash(fp32_run, capsys, tmp_path):
    """Folders without a manifest are hashed here: one byte changed in a copy of the run's generated files."""
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        for name in ("config.yaml", "plan.json", "train.py"):
            shutil.copy(fp32_run.run_dir / name, folder / name)
    (b / "train.py").write_text((b / "train.py").read_text() + "# edited\n")
    (b / "extra.txt").write_text("new\n")
    code, out = _diff(capsys, a, b, "--json")
    result = json.loads(out)
    assert code == 1
    assert result["files"]["changed"] == ["train.py"] and result["files"]["added"] == ["extra.txt"]
    assert result["config"] == []


def test_bad_input_exits_2(fp32_run, capsys, tmp_path):
    code = main(["diff", str(tmp_path / "missing"), str(fp32_run.bundle)])
    assert code == 2
    assert "neither a bundle folder" in capsys.readouterr().err


def test_measure_adds_perplexity_and_speed_side_by_side(fp32_run, int8_run, capsys):
    code, out = _diff(capsys, fp32_run.bundle, int8_run.bundle, "--measure", "--runs", "1", "--json")
    assert code == 1
    measured = json.loads(out)["measured"]
    assert measured["comparable"]
    a, b = measured["baseline"], measured["candidate"]
    assert a["precision"] == "fp32" and b["precision"] == "int8"
    assert a["perplexity"] > 0 and b["perplexity"] > 0 and a["decode_tokens_per_s"] > 0
    rows = {r["metric"]: r for r in measured["rows"]}
    assert set(rows) >= {"held-out perplexity", "decode tokens/s", "prefill ms", "peak memory MiB", "bundle size"}
    assert all(r["verdict"] == "—" for r in rows.values())  # diff reports, it does not judge


def test_measure_with_an_empty_text_exits_2(fp32_run, int8_run, capsys, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    assert main(["diff", str(fp32_run.bundle), str(int8_run.bundle), "--measure", "--text", str(empty)]) == 2
    assert "held-out text is empty" in capsys.readouterr().err
