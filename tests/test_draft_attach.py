"""slmc.draft: attaching a second compiled bundle to a target as its draft decoder."""

from __future__ import annotations

import shutil

import pytest

from slmc.draft import DraftError, attach_draft, main
from slmc.runtime import load_bundle


@pytest.fixture
def target(bundle_dir, tmp_path, rewrite_manifest):
    """The fixture bundle standing in for a larger target (its manifest says 10x the parameters),
    so the fixture bundle itself can be its draft."""
    folder = shutil.copytree(bundle_dir, tmp_path / "target")
    return rewrite_manifest(folder, lambda d: d["model"].update(parameters=d["model"]["parameters"] * 10))


def test_attached_draft_runs_and_keeps_greedy_tokens(target, bundle_dir, tmp_path):
    out = attach_draft(target, bundle_dir, tmp_path / "out")
    assert (out / "draft" / "model.onnx").is_file()
    bundle = load_bundle(out, threads=1)
    assert bundle.draft is not None and bundle.manifest.data["draft"]["files"]["model"] == "draft/model.onnx"
    ids = bundle.generate_ids("the small model runs", max_new_tokens=20, speculative="off")
    assert bundle.generate_ids("the small model runs", max_new_tokens=20, speculative="draft") == ids


def test_every_rule_is_reported_at_once(bundle_dir, bundle_copy, rewrite_manifest, tmp_path):
    (bundle_copy / "tokenizer.json").write_text((bundle_copy / "tokenizer.json").read_text().replace("ka", "kb"))

    def edit(data):
        data["limits"]["max_seq_len"] = 64
        data["runtime"]["execution_provider"] = "CUDAExecutionProvider"

    draft = rewrite_manifest(bundle_copy, edit)
    with pytest.raises(DraftError) as caught:
        attach_draft(bundle_dir, draft, tmp_path / "out", memory_bytes=1000)
    message = caught.value.message
    for part in ("tokenizer differs", "not fewer than the target's", "max_seq_len is 64",
                 "runtime.execution_provider", "usable memory"):
        assert part in message
    assert not (tmp_path / "out").exists()  # nothing written


def test_cli_refuses_a_draft_no_smaller_than_the_target(bundle_dir, tmp_path, capsys):
    assert main([str(bundle_dir), str(bundle_dir), str(tmp_path / "out")]) == 2
    assert "not fewer than the target's" in capsys.readouterr().err
