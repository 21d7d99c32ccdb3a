"""`slmc compile --from <run>`: the same resolved config compiled again, and the rebuild report.

The tests marked slow compile the base run and its rebuild (`pytest -m slow tests/maintain`)."""

from __future__ import annotations

import json

import pytest

from slmc.errors import ConfigError
from slmc.load import config_hash
from slmc.rebuild import load_run_config, parse_overrides, rebuild
from slmc.runtime.manifest import MANIFEST_NAME, read_manifest, sha256_file


@pytest.fixture(scope="module")
def rebuilt(base_run):
    return rebuild(base_run.run_dir, quiet=True)


@pytest.mark.slow
def test_rebuild_compiles_the_same_config_into_a_new_folder(base_run, rebuilt):
    result, report = rebuilt
    assert result.run_dir == base_run.run_dir.parent / f"{base_run.run_dir.name}-rebuild"
    assert config_hash(load_run_config(result.run_dir)) == config_hash(load_run_config(base_run.run_dir))
    assert result.plan.run_name == base_run.plan.run_name
    assert json.loads((result.run_dir / "rebuild.json").read_text()) == report


@pytest.mark.slow
def test_report_matches_the_bundles_file_by_file(base_run, rebuilt):
    result, report = rebuilt
    names = sorted(p.name for p in base_run.bundle.iterdir() if p.name != MANIFEST_NAME)
    assert [row["file"] for row in report["files"]] == names
    for row in report["files"]:
        same = sha256_file(base_run.bundle / row["file"]) == sha256_file(result.bundle / row["file"])
        assert row["status"] == ("identical" if same else "different")
        assert ("why" in row) == (not same)
    produced = {row["file"]: row["produced_by"] for row in report["files"]}
    assert produced["tokenizer.json"] == "tokenizer" and produced["genai_config.json"] == "package"
    assert produced["model.onnx"] == "optimize"  # the default fp32 ORT bundle ships the optimized graph


@pytest.mark.slow
def test_report_says_what_differs_in_the_manifest(base_run, rebuilt):
    result, report = rebuilt
    fields = {row["field"]: row for row in report["manifest_fields"]}
    old, new = read_manifest(base_run.bundle), read_manifest(result.bundle)
    assert ("provenance.created" in fields) == (old["provenance"]["created"] != new["provenance"]["created"])
    assert all(row["kind"] == "build" for key, row in fields.items() if key.startswith("metrics.stage_seconds"))
    assert report["versions"] == {}  # same machine, same packages
    assert report["byte_identical"] == (not fields and all(r["status"] == "identical" for r in report["files"]))
    # Same versions, same machine: the content is reproducible (only build times may differ).
    assert report["content_identical"], report


def test_overrides_other_than_the_folder_are_refused():
    assert parse_overrides(["run_name=again", "out_dir=/tmp/x"]) == {"run_name": "again", "out_dir": "/tmp/x"}
    with pytest.raises(ConfigError, match="exactly"):
        parse_overrides(["train.lr=0.1"])


def test_from_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(ConfigError, match="not an slmc run folder"):
        rebuild(tmp_path, quiet=True)


def test_cli_refuses_flags_that_would_not_rebuild(tmp_path, capsys):
    from slmc.cli import main

    assert main(["compile", "--from", str(tmp_path), "--plan-only"]) == 2
    assert "--from" in capsys.readouterr().err
    assert main(["compile", "--from", str(tmp_path), "seed=3"]) == 2  # not a run folder: named, exit 2
    assert "not an slmc run folder" in capsys.readouterr().err
