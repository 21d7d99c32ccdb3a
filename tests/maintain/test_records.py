"""Lineage records, bundle versions, the rebuild comparison and the runtime's schema check, on
hand-made run folders and the shared fixture bundle (no compile: fast)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slmc.lineage import lineage_record, without_local_paths
from slmc.load import load_config
from slmc.plan import make_plan
from slmc.rebuild import compare_runs
from slmc.runtime.errors import BundleError
from slmc.runtime.manifest import MANIFEST_NAME, manifest_json, read_manifest, with_hashes
from tests.fixtures.checkpoints import SMALL_LLAMA, _write_tokenizer, write_safetensors

GRANDPARENT = {"run_name": "first", "version": "3", "config_sha256": "c" * 64,
               "init": {"kind": "hub", "hub": "org/base", "revision": "d" * 40}, "parent": None,
               "run_dir": "/elsewhere/first", "manifest_sha256": "e" * 64}


def _restamp(bundle: Path, **changes) -> dict:
    data = json.loads((bundle / MANIFEST_NAME).read_text())
    data = with_hashes(bundle, {**data, **changes})
    (bundle / MANIFEST_NAME).write_text(manifest_json(data))
    return read_manifest(bundle)


def _run_folder(root: Path, bundle_dir: Path, *, lineage: dict | None, version: str | None) -> tuple[Path, dict]:
    """A finished run folder: config.yaml, plan.json, a final checkpoint and a bundle."""
    run = root / "parent-run"
    checkpoint = run / "checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text(json.dumps(SMALL_LLAMA))
    write_safetensors(checkpoint / "model.safetensors")
    _write_tokenizer(checkpoint / "tokenizer.json", 64)
    (run / "config.yaml").write_text(f"# resolved by slmc; config sha256 {'a' * 64}\ninit:\n  kind: scratch\n")
    provenance = {"checkpoints": {}, **({"lineage": lineage} if lineage else {})}
    (run / "plan.json").write_text(json.dumps({"run_name": "parent-run", "provenance": provenance}))
    shutil.copytree(bundle_dir, run / "bundle")
    manifest = _restamp(run / "bundle", **({"version": version} if version else {}))
    return run, manifest


def test_child_record_names_the_parent_and_counts_its_version_up(tmp_path, bundle_dir):
    parent_lineage = {"run_name": "parent-run", "version": "7", "config_sha256": "a" * 64,
                      "init": {"kind": "run", "run": "first", "path": "/elsewhere/first/checkpoint"},
                      "parent": GRANDPARENT}
    run, manifest = _run_folder(tmp_path, bundle_dir, lineage=parent_lineage, version="7")
    cfg = load_config(["init=from_run", f"init.run={run}", "train=finetune"])
    assert cfg.init.path == str(run / "checkpoint")
    record = lineage_record(cfg, "child")
    assert record["version"] == "8" and record["init"] == {"kind": "run", "run": "parent-run",
                                                           "path": str(run / "checkpoint")}
    parent = record["parent"]
    assert parent["run_dir"] == str(run) and parent["manifest_sha256"] == manifest["manifest_sha256"]
    assert parent["parent"]["run_name"] == "first"  # the grandparent comes along from the parent's plan.json
    shipped = json.dumps(without_local_paths(record))
    assert "/elsewhere" not in shipped and str(run) not in shipped
    set_by_hand = load_config(["init=from_run", f"init.run={run}", "package.version=12"])
    assert lineage_record(set_by_hand, "child")["version"] == "12"


def test_a_distilled_student_names_its_teacher_but_has_no_parent(tmp_path, bundle_dir):
    from slmc.lineage_show import describe_init

    run, manifest = _run_folder(tmp_path, bundle_dir, lineage=None, version="4")
    cfg = load_config(["init=distill", f"init.distill.teacher_path={run / 'checkpoint'}"])
    record = lineage_record(cfg, "student")
    assert record["parent"] is None and record["version"] == "1"  # its weights start from scratch
    teacher = record["init"]["teacher"]
    assert teacher == {"kind": "run", "run": "parent-run", "version": "4",
                       "manifest_sha256": manifest["manifest_sha256"], "path": str(run / "checkpoint")}
    assert describe_init(record["init"]) == "scratch (model tiny), distilled from run parent-run v4"
    shipped = without_local_paths(record)["init"]["teacher"]
    assert "path" not in shipped and shipped["run"] == "parent-run"
    local = lineage_record(load_config(["init=distill", f"init.distill.teacher_path={tmp_path / 'elsewhere'}"]), "s")
    assert local["init"]["teacher"] == {"kind": "local", "path": str(tmp_path / "elsewhere")}
    assert describe_init(without_local_paths(local)["init"]).endswith(
        "distilled from local checkpoint (path not recorded in the bundle)")


def test_a_parent_from_before_lineage_is_read_from_its_config(tmp_path, bundle_dir):
    run, manifest = _run_folder(tmp_path, bundle_dir, lineage=None, version=None)
    record = lineage_record(load_config(["init=pretrained", f"init.path={run}/bundle"]), "child")
    parent = record["parent"]
    assert parent["config_sha256"] == "a" * 64 and parent["init"]["kind"] == "scratch"
    assert parent["version"] is None and record["version"] == "2"  # an unversioned parent counts as 1


def test_runtime_tells_a_newer_bundle_from_a_broken_one(bundle_copy):
    data = json.loads((bundle_copy / MANIFEST_NAME).read_text())
    # Re-stamped, so the checksum holds: only the schema version is new.
    (bundle_copy / MANIFEST_NAME).write_text(manifest_json({**data, "schema_version": 2}))
    with pytest.raises(BundleError, match="newer than this runtime") as info:
        read_manifest(bundle_copy)
    assert "upgrade slmc" in info.value.fix and "schema_version 2" in info.value.message
    (bundle_copy / MANIFEST_NAME).write_text(manifest_json({**data, "schema_version": 0}))
    with pytest.raises(BundleError, match="is not supported"):
        read_manifest(bundle_copy)
    (bundle_copy / MANIFEST_NAME).write_text(manifest_json({**data, "version": 3}))
    with pytest.raises(BundleError, match="'version' is 3, expected a string"):
        read_manifest(bundle_copy)


def test_rebuild_report_names_the_changed_file_its_stage_and_the_versions(tmp_path, bundle_dir):
    plan = make_plan(load_config([]), "r")
    runs = []
    for name, tokenizer_text in (("a", "same"), ("b", "changed")):
        run = tmp_path / name
        shutil.copytree(bundle_dir, run / "bundle")
        (run / "tokenizer").mkdir()
        (run / "tokenizer" / "tokenizer.json").write_text(tokenizer_text)
        (run / "metrics.jsonl").write_text(f'{{"elapsed": "{name}"}}\n')
        runs.append(run)
    data = json.loads((runs[1] / "bundle" / MANIFEST_NAME).read_text())
    (runs[1] / "bundle" / "tokenizer_config.json").write_text("{}")
    versions = {**data["provenance"]["versions"], "torch": "9.9"}
    _restamp(runs[1] / "bundle", provenance={**data["provenance"], "versions": versions,
                                            "created": "2030-01-01T00:00:00+00:00"})
    report = compare_runs(runs[0], runs[1], plan)
    rows = {r["file"]: r for r in report["files"]}
    assert rows["tokenizer_config.json"]["status"] == "different"
    assert rows["tokenizer_config.json"]["produced_by"] == "tokenizer" and "torch" in rows["tokenizer_config.json"]["why"]
    assert rows["model.onnx"]["status"] == "identical" and "why" not in rows["model.onnx"]
    assert report["versions"] == {"torch": [data["provenance"]["versions"].get("torch"), "9.9"]}
    kinds = {r["field"]: r["kind"] for r in report["manifest_fields"]}
    assert kinds == {"provenance.versions.torch": "versions", "provenance.created": "build"}
    assert report["first_differing_stage"] == "tokenizer"  # metrics.jsonl differs too, but only logs times
    assert not report["byte_identical"] and not report["content_identical"]
