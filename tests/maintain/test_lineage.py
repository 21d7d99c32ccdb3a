"""Continue from a run (init=from_run / init.path=<run folder>), and the lineage it records.

The tests marked slow compile a base run and a fine-tune of it (minutes on a busy 2-core machine:
`pytest -m slow tests/maintain`); the rest run by default."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slmc.errors import ConfigError
from slmc.lineage import next_version
from slmc.lineage_show import lineage_of
from slmc.load import load_config
from slmc.pipeline import compile_config
from slmc.runtime.manifest import read_manifest

from .conftest import FAST

TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def parent_run(base_run, tmp_path_factory):
    """A copy of the base run whose checkpoint has a chat template (the base run stays pristine)."""
    from dataclasses import replace

    copy = shutil.copytree(base_run.run_dir, tmp_path_factory.mktemp("parent") / base_run.run_dir.name)
    config = copy / "checkpoint" / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "chat_template": TEMPLATE}))
    return replace(base_run, run_dir=copy, report=copy / "report.md")


@pytest.fixture(scope="module")
def child_run(parent_run, maintain_out):
    """A fine-tune continued from the parent run folder."""
    overrides = [*FAST, f"out_dir={maintain_out}", "init=from_run", f"init.run={parent_run.run_dir}",
                 "train=finetune", "train.max_steps=4"]
    return compile_config(load_config(overrides), quiet=True)


@pytest.mark.slow
def test_child_starts_from_the_parents_final_weights(parent_run, child_run):
    parent, child = _metrics(parent_run.run_dir), _metrics(child_run.run_dir)
    parent_final = [m["eval_ppl"] for m in parent if m.get("eval_ppl") is not None][-1]
    parent_start, child_start = parent[0]["eval_ppl"], child[0]["eval_ppl"]
    assert child[0]["step"] == 0 and parent[0]["step"] == 0
    # Same held-out text and tokenizer: the child's starting perplexity is the parent's final one ...
    assert child_start == pytest.approx(parent_final, rel=1e-3)
    # ... and far from a random start's.
    assert parent_start > 1.5 * parent_final


@pytest.mark.slow
def test_child_config_names_the_parents_checkpoint_and_carries_the_chat_template(parent_run, child_run):
    cfg = child_run.run_dir / "config.yaml"
    import yaml

    data = yaml.safe_load(cfg.read_text())
    assert data["init"]["path"] == str(parent_run.run_dir / "checkpoint")
    assert data["init"]["run"] == str(parent_run.run_dir)
    assert data["provenance"]["lineage"]["parent"]["run_dir"] == str(parent_run.run_dir)
    for path in ("tokenizer/tokenizer_config.json", "bundle/tokenizer_config.json"):
        assert json.loads((child_run.run_dir / path).read_text())["chat_template"] == TEMPLATE


@pytest.mark.slow
def test_lineage_chain_of_two_from_the_bundle_alone(parent_run, child_run, tmp_path):
    parent_manifest = read_manifest(parent_run.bundle)
    child_manifest = read_manifest(child_run.bundle)
    assert parent_manifest["version"] == "1" and child_manifest["version"] == "2"
    moved = shutil.copytree(child_run.bundle, tmp_path / "shipped")  # a device has the bundle only
    chain = lineage_of(moved)
    assert [r["run_name"] for r in chain] == [child_run.plan.run_name, parent_run.plan.run_name]
    assert [r["version"] for r in chain] == ["2", "1"]
    assert chain[0]["manifest_sha256"] == child_manifest["manifest_sha256"]
    assert chain[1]["manifest_sha256"] == parent_manifest["manifest_sha256"]
    assert chain[1]["config_sha256"] == parent_manifest["provenance"]["config_sha256"]
    assert chain[0]["init"]["kind"] == "run" and chain[1]["init"] == {"kind": "scratch", "model": "tiny"}
    assert "run_dir" not in json.dumps(child_manifest["provenance"]["lineage"])  # no local paths ship


@pytest.mark.slow
def test_plan_json_and_cli_print_the_chain(parent_run, child_run, capsys):
    from slmc.cli import main

    plan = json.loads((child_run.run_dir / "plan.json").read_text())
    parent = plan["provenance"]["lineage"]["parent"]
    assert parent["run_name"] == parent_run.plan.run_name and parent["version"] == "1"
    assert main(["lineage", str(child_run.run_dir), "--json"]) == 0
    chain = json.loads(capsys.readouterr().out)["chain"]
    assert [r["version"] for r in chain] == ["2", "1"] and chain[0]["run_dir"] == str(child_run.run_dir)
    assert main(["lineage", str(child_run.bundle)]) == 0
    text = capsys.readouterr().out
    assert "2 run(s)" in text and f"from run {parent_run.plan.run_name}" in text and "scratch (model tiny)" in text


@pytest.mark.slow
def test_versions_count_up_and_a_set_version_wins(child_run, maintain_out):
    base = [f"out_dir={maintain_out}", "init=pretrained", f"init.path={child_run.run_dir}", "train=finetune"]
    grandchild = compile_config(load_config(base), plan_only=True, quiet=True)
    assert grandchild.plan.lineage["version"] == "3"
    assert grandchild.plan.lineage["parent"]["parent"]["version"] == "1"  # the whole chain, nested
    named = compile_config(load_config([*base, "package.version=2.0.0"]), plan_only=True, quiet=True)
    assert named.plan.lineage["version"] == "2.0.0"


def test_next_version():
    assert next_version(None) == "2" and next_version("9") == "10" and next_version("1.4.2") == "1.4.3"
    assert next_version("v7") == "v8"
    with pytest.raises(ConfigError, match="package.version"):
        next_version("beta")


def test_incomplete_or_wrong_run_folder_is_refused_by_name(tmp_path):
    run = tmp_path / "unfinished"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "plan.json").write_text("{}")
    with pytest.raises(ConfigError, match="without a final checkpoint") as info:
        load_config(["init=from_run", f"init.run={run}"])
    assert str(run) in info.value.message and info.value.where == "init.run"
    with pytest.raises(ConfigError, match="without a final checkpoint") as info:
        load_config(["init=pretrained", f"init.path={run}"])
    assert info.value.where == "init.path"
    with pytest.raises(ConfigError, match="not an slmc run folder"):
        load_config(["init=from_run", f"init.run={tmp_path}"])
    with pytest.raises(ConfigError, match="init.run"):
        load_config(["init=from_run"])  # required
