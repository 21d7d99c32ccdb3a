"""Every dataset format the data stage reads, for text and chat; bad records name file and record;
a Hub dataset id read offline from the Hub cache."""

from __future__ import annotations

import json
import os

import pytest

from slmc.errors import ConfigError, SlmcError
from slmc.load import load_config
from slmc.stages.data import gather

from .conftest import conversation, instruction, write_jsonl

TEXTS = [f"document number {i} about things" for i in range(40)]


def _cfg(*overrides):
    return load_config(["data=files", *overrides]).data


def _dataset(records):
    from datasets import Dataset

    return Dataset.from_list(records)


@pytest.mark.parametrize("kind", ["parquet", "csv", "json", "saved"])
def test_text_records_from_each_format(tmp_path, kind):
    ds = _dataset([{"text": t, "id": i} for i, t in enumerate(TEXTS)])
    path = tmp_path / (f"d.{kind}" if kind != "saved" else "saved")
    {"parquet": ds.to_parquet, "csv": ds.to_csv, "json": lambda p: ds.to_json(p, lines=False),
     "saved": ds.save_to_disk}[kind](str(path))
    corpus = gather(_cfg(f"data.train_files=[{path}]"))
    got = corpus.train + corpus.heldout
    assert all(t in got for t in TEXTS)
    assert corpus.info["train_sources"][0].endswith(":record 1")


def test_chat_from_parquet_and_saved_dataset_dict(tmp_path):
    from datasets import DatasetDict

    records = [conversation(i) for i in range(20)]
    _dataset(records).to_parquet(str(tmp_path / "chat.parquet"))
    corpus = gather(_cfg("data.format=chat", f"data.train_files=[{tmp_path}/chat.parquet]"))
    lines = [json.loads(line) for line in corpus.records[0].splitlines()]
    assert len(lines) == 19 and lines[0]["messages"] == records[0]["messages"]
    DatasetDict({"train": _dataset(records[:5]), "test": _dataset(records[5:8])}).save_to_disk(str(tmp_path / "dd"))
    corpus = gather(_cfg("data.format=chat", f"data.train_files=[{tmp_path}/dd]", f"data.heldout_files=[{tmp_path}/dd]",
                         "data.split=test"))
    assert corpus.info["train_examples"] == 3
    with pytest.raises(ConfigError, match="no split 'valid'"):
        gather(_cfg("data.format=chat", f"data.train_files=[{tmp_path}/dd]", "data.split=valid"))


def test_instruction_fields_become_turns(tmp_path):
    rec = {"q": "What is 2+2?", "a": "4", "ctx": "arithmetic", "sys": "Be exact."}
    write_jsonl(tmp_path / "i.jsonl", [rec] * 4)
    corpus = gather(_cfg("data.format=instruction", f"data.train_files=[{tmp_path}/i.jsonl]", "data.prompt_field=q",
                         "data.response_field=a", "data.input_field=ctx", "data.system_field=sys"))
    messages = json.loads(corpus.records[0].splitlines()[0])["messages"]
    assert messages == [{"role": "system", "content": "Be exact."},
                        {"role": "user", "content": "What is 2+2?\n\narithmetic"},
                        {"role": "assistant", "content": "4"}]


@pytest.mark.parametrize("record, words", [
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]}, ["message 1", "role"]),
    ({"messages": [{"role": "user", "content": "hi"}]}, ["no assistant message"]),
    ({"conversation": []}, ["data.messages_field", "'messages'"]),
])
def test_bad_chat_record_names_file_and_record(tmp_path, record, words):
    write_jsonl(tmp_path / "c.jsonl", [conversation(0), conversation(1), record])
    with pytest.raises(ConfigError) as err:
        gather(_cfg("data.format=chat", f"data.train_files=[{tmp_path}/c.jsonl]"))
    text = err.value.render()
    assert "c.jsonl:3" in text and all(w in text for w in words), text


def test_bad_parquet_record_names_the_record(tmp_path):
    _dataset([instruction(0), instruction(1), {"instruction": "x", "output": None}]).to_parquet(str(tmp_path / "i.parquet"))
    with pytest.raises(ConfigError, match=r"i.parquet:record 3: no string field 'output'"):
        gather(_cfg("data.format=instruction", f"data.train_files=[{tmp_path}/i.parquet]"))


def test_not_a_parquet_file_is_named(tmp_path):
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(ConfigError, match=r"x.parquet: cannot be read as parquet"):
        gather(_cfg(f"data.train_files=[{tmp_path}/x.parquet]"))


def test_hub_dataset_id_read_offline_from_the_cache(tmp_path, monkeypatch):
    """A dataset repo laid out in a temporary Hub cache as huggingface_hub writes it
    (datasets--org--name/refs/main, snapshots/<commit>/...), read with HF_HUB_OFFLINE=1."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / "datasets--someone--tiny-chat" / "snapshots" / commit
    (snapshot / "data").mkdir(parents=True)
    write_jsonl(snapshot / "data" / "train.jsonl", [conversation(i) for i in range(10)])
    write_jsonl(snapshot / "data" / "test.jsonl", [conversation(i) for i in range(100, 103)])
    (cache / "datasets--someone--tiny-chat" / "refs").mkdir()
    (cache / "datasets--someone--tiny-chat" / "refs" / "main").write_text(commit)
    for key, value in (("HF_HUB_CACHE", str(cache)), ("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1")):
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    corpus = gather(_cfg("data.format=chat", "data.train_files=[someone/tiny-chat]", "data.heldout_files=[someone/tiny-chat]",
                         "data.split=test"))
    assert corpus.info["train_examples"] == 3  # data/test.jsonl: the split's file
    assert "(100)" in corpus.records[0]
    with pytest.raises(SlmcError, match="someone/missing is not in the Hub cache") as err:
        gather(_cfg("data.format=chat", "data.train_files=[someone/missing]"))
    assert "--repo-type dataset" in err.value.render()


def test_lone_surrogate_in_a_message_is_refused_with_its_record(tmp_path):
    path = tmp_path / "s.jsonl"
    write_jsonl(path, [conversation(0)])
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"messages": [{"role": "user", "content": "a \\ud800 b"}, {"role": "assistant", "content": "ok"}]}\n')
    with pytest.raises(ConfigError, match=r"s.jsonl:2: a user message holds a lone surrogate \\ud800"):
        gather(_cfg("data.format=chat", f"data.train_files=[{path}]"))
