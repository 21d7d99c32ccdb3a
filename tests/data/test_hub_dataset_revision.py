"""The data stage's cache key follows a Hub dataset's commit, not only its id: a dataset updated on
the Hub (refs/main moved) is read again; the same commit reuses the cached stage; the manifest
names the commit read."""

from __future__ import annotations

import pytest

from slmc.cache import stage_key
from slmc.load import load_config
from slmc.plan import plan_stage
from slmc.stages.registry import DATA

from .conftest import conversation, write_jsonl

REPO = "datasets--someone--tiny-chat"


def _publish(cache, commit: str, first: int) -> None:
    """Lay out a snapshot as huggingface_hub writes it and point refs/main at it."""
    snapshot = cache / REPO / "snapshots" / commit / "data"
    snapshot.mkdir(parents=True)
    write_jsonl(snapshot / "train.jsonl", [conversation(i) for i in range(first, first + 10)])
    (cache / REPO / "refs").mkdir(exist_ok=True)
    (cache / REPO / "refs" / "main").write_text(commit)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    for key, value in (("HF_HUB_CACHE", str(cache)), ("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1")):
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    return cache


def _key(run, *files):
    cfg = load_config(["data=chat", f"data.train_files=[{','.join(files)}]"])
    return stage_key(plan_stage(DATA, cfg, None), cfg, run)


def test_a_hub_dataset_keys_the_data_stage_by_its_commit(hub_cache, tmp_path):
    run = tmp_path / "run"
    _publish(hub_cache, "a" * 40, 0)
    first = _key(run, "someone/tiny-chat")
    assert _key(run, "someone/tiny-chat") == first  # same commit: the cached stage is reused
    _publish(hub_cache, "b" * 40, 100)  # the dataset was updated on the Hub and fetched again
    updated = _key(run, "someone/tiny-chat")
    assert updated != first
    assert _key(run, f"someone/tiny-chat@{'a' * 40}") not in (first, updated)  # a pinned id is its own key


def test_an_unresolvable_dataset_still_gets_a_key_and_the_stage_reports_it(hub_cache, tmp_path):
    run = tmp_path / "run"
    assert _key(run, "someone/missing") == _key(run, "someone/missing")  # the data stage then names the problem


def test_a_local_file_is_still_keyed_by_its_content(hub_cache, tmp_path):
    path = tmp_path / "chat.jsonl"
    write_jsonl(path, [conversation(i) for i in range(5)])
    before = _key(tmp_path / "run", str(path))
    write_jsonl(path, [conversation(i) for i in range(6)])
    assert _key(tmp_path / "run", str(path)) != before


def test_the_commit_read_is_recorded_for_the_manifest(hub_cache, tmp_path):
    from slmc.stages.base import Results
    from slmc.stages.package import _dataset_revisions
    from slmc.stages.prepare import run_data

    _publish(hub_cache, "c" * 40, 0)
    cfg = load_config(["data=chat", "data.train_files=[someone/tiny-chat]", "data.heldout_files=[someone/tiny-chat]"])
    results = Results()
    results.add("data", run_data(cfg, tmp_path / "run", results))
    assert results.get("data").hub_revisions == {"someone/tiny-chat": "c" * 40}
    assert _dataset_revisions(results) == {"someone/tiny-chat": "c" * 40}
    assert _dataset_revisions(Results()) == {}  # no data stage result (or local files): nothing to name
