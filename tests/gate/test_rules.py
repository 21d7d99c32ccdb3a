"""Check-time rules of the regression gate, against the shared fixture bundle (tests/fixtures/bundle.py)."""

from __future__ import annotations

import json
import platform

import pytest

from slmc.load import load_config
from slmc.rules._engine import run_rules

RULES = ("targets.baseline_bundle", "targets.baseline_comparable", "targets.baseline_tolerances")


def _found(*overrides: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for v in run_rules(load_config(list(overrides)), only=RULES):
        out.setdefault(v.rule, []).append(v)
    return out


@pytest.fixture
def same_machine():
    if platform.machine() != "x86_64":
        pytest.skip("the shipped cpu device profile is x86_64")


def test_missing_baseline_is_an_error_naming_the_path(tmp_path):
    found = _found(f"targets.baseline={tmp_path / 'nope'}", "targets.max_ppl_increase=0.05")
    (v,) = found["targets.baseline_bundle"]
    assert v.severity == "error" and v.paths == ("targets.baseline",) and "does not exist" in v.message
    assert "targets.baseline_comparable" not in found


def test_tampered_baseline_manifest_is_an_error(bundle_copy):
    data = json.loads((bundle_copy / "manifest.json").read_text())
    data["precision"] = "int4"  # edited without re-stamping the checksum
    (bundle_copy / "manifest.json").write_text(json.dumps(data))
    (v,) = _found(f"targets.baseline={bundle_copy}", "targets.max_ppl_increase=0.05")["targets.baseline_bundle"]
    assert "manifest_sha256" in v.message or "checksum" in v.message


def test_same_tokenizer_and_device_class_pass(bundle_dir, same_machine):
    found = _found(f"targets.baseline={bundle_dir}", f"data.tokenizer={bundle_dir / 'tokenizer.json'}",
                   "model.vocab_size=384", "targets.max_ppl_increase=0.05")
    assert found == {}


def test_another_tokenizer_file_is_refused(bundle_dir, tmp_path, same_machine):
    other = tmp_path / "tokenizer.json"
    raw = json.loads((bundle_dir / "tokenizer.json").read_text())
    raw["added_tokens"] = raw["added_tokens"][:2]  # a different tokenizer
    other.write_text(json.dumps(raw))
    (v,) = _found(f"targets.baseline={bundle_dir}", f"data.tokenizer={other}",
                  "targets.max_ppl_increase=0.05")["targets.baseline_comparable"]
    assert v.paths == ("targets.baseline", "data.tokenizer") and "differs from the baseline's tokenizer" in v.message


def test_a_trained_tokenizer_is_left_to_the_gate(bundle_dir, same_machine):
    """init=scratch without data.tokenizer: the tokenizer does not exist at check time."""
    assert _found(f"targets.baseline={bundle_dir}", "targets.max_ppl_increase=0.05") == {}


def test_another_device_class_is_refused(bundle_dir, rewrite_manifest, bundle_copy):
    rewrite_manifest(bundle_copy, lambda m: m["device"].update(arch="aarch64", kind="jetson"))
    (v,) = _found(f"targets.baseline={bundle_copy}", "targets.max_ppl_increase=0.05")["targets.baseline_comparable"]
    assert "another device class" in v.message and "arch aarch64 (baseline) vs x86_64" in v.message
    assert "kind jetson (baseline) vs cpu" in v.message


def test_tensorrt_cannot_be_gated_here(bundle_dir):
    (v,) = _found(f"targets.baseline={bundle_dir}", "runtime=tensorrt", "device=jetson_orin_nano",
                  "targets.max_ppl_increase=0.05")["targets.baseline_comparable"]
    assert "ONNX Runtime" in v.message and "runtime.name" in v.paths


def test_tolerances_and_baseline_come_together(bundle_dir, same_machine):
    (v,) = _found("targets.min_speed_ratio=0.9")["targets.baseline_tolerances"]
    assert v.severity == "warning" and "without targets.baseline" in v.message
    (v,) = _found(f"targets.baseline={bundle_dir}")["targets.baseline_tolerances"]
    assert "never fails" in v.message
    (v,) = _found(f"targets.baseline={bundle_dir}", "targets.max_accuracy_drop=0.02")["targets.baseline_tolerances"]
    assert "eval.tasks" in v.message


def test_this_runs_own_bundle_cannot_be_its_baseline(bundle_dir, tmp_path):
    """The compile replaces bundle/ before the gate runs: it would compare the new bundle with itself."""
    own = tmp_path / "run1" / "bundle"
    own.parent.mkdir()
    import shutil

    shutil.copytree(bundle_dir, own)
    (v,) = _found(f"out_dir={tmp_path}", "run_name=run1", f"targets.baseline={own.parent}",
                  "targets.max_ppl_increase=0.05")["targets.baseline_bundle"]
    assert "this run's own bundle" in v.message
    assert "targets.baseline_bundle" not in _found(f"out_dir={tmp_path}", "run_name=run2", f"targets.baseline={own}",
                                                   "targets.max_ppl_increase=0.05")
