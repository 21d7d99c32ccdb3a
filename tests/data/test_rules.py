"""Check-time data rules, from a sample of the data: each names the config path and file/record."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.checkpoints import _check as check

from .conftest import conversation, instruction, write_jsonl


def test_fields_and_roles_named_with_file_and_record(tmp_path):
    bad_role = {"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]}
    path = write_jsonl(tmp_path / "c.jsonl", [conversation(0), bad_role])
    (v,) = check(["data=chat", f"data.train_files=[{path}]"], "data.records_valid")
    assert v.paths == ("data.messages_field",) and "c.jsonl:2" in v.message and "role" in v.message
    good = write_jsonl(tmp_path / "g.jsonl", [conversation(i) for i in range(5)])
    assert check(["data=chat", f"data.train_files=[{good}]"], "data.records_valid") == []
    (v,) = check(["data=instruction", f"data.train_files=[{good}]"], "data.records_valid")
    assert v.paths == ("data.prompt_field",) and "g.jsonl:1" in v.message and "'instruction'" in v.message


def test_text_records_in_parquet_need_the_text_field(tmp_path):
    from datasets import Dataset

    Dataset.from_list([{"body": "x"}] * 3).to_parquet(str(tmp_path / "t.parquet"))
    (v,) = check(["data=files", f"data.train_files=[{tmp_path}/t.parquet]"], "data.records_valid")
    assert v.paths == ("data.jsonl_field",) and "t.parquet:record 1" in v.message and "body" in v.fix
    # the text-file rule leaves parquet to this one (it is not UTF-8 text, and is not meant to be)
    assert check(["data=files", f"data.train_files=[{tmp_path}/t.parquet]"], "data.files_are_text") == []


def test_saved_dataset_folder_is_a_valid_data_path(tmp_path):
    from datasets import Dataset

    Dataset.from_list([instruction(i) for i in range(4)]).save_to_disk(str(tmp_path / "saved"))
    overrides = ["data=instruction", f"data.train_files=[{tmp_path}/saved]"]
    assert check(overrides, "data.paths_exist") == [] and check(overrides, "data.records_valid") == []
    (tmp_path / "plain").mkdir()
    (v,) = check(["data=instruction", f"data.train_files=[{tmp_path}/plain]"], "data.paths_exist")
    assert "is a folder" in v.message


def test_template_needed_from_checkpoint_or_catalogue(tmp_path, make_checkpoint):  # noqa: F811
    data = write_jsonl(tmp_path / "c.jsonl", [conversation(i) for i in range(5)])
    ckpt = make_checkpoint(tokenizer_size=300)
    base = ["data=chat", f"data.train_files=[{data}]", "init=pretrained", f"init.path={ckpt}", "train=finetune"]
    (v,) = check(base, "data.chat_template_available")
    assert "data.chat_template" in v.paths and "has none" in v.message
    (v,) = check([*base, "data.chat_template=chatml"], "data.chat_template_available")
    assert "<|im_start|>" in v.message and "cannot be added" in v.message
    (ckpt / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    assert check(base, "data.chat_template_available") == []
    (v,) = check([*base, "data.chat_template=vicuna"], "data.chat_template_available")
    assert "no chat template named 'vicuna'" in v.message
    # scratch: the tokenizer trained here gets the template's tokens
    assert check(["data=chat", f"data.train_files=[{data}]", "data.chat_template=zephyr"],
                 "data.chat_template_available") == []


def test_max_length_against_rows_and_context(tmp_path):
    data = write_jsonl(tmp_path / "c.jsonl", [conversation(i) for i in range(5)])
    base = ["data=chat", f"data.train_files=[{data}]", "train.seq_len=128"]
    assert check([*base, "data.max_length=129"], "data.max_length_fits") == []
    (v,) = check([*base, "data.max_length=200"], "data.max_length_fits")
    assert v.paths == ("data.max_length", "train.seq_len")
    (v,) = check([*base, "export.max_seq_len=64"], "data.export_serves_examples")
    assert v.severity == "warning" and "export.max_seq_len=128" in v.fix


@pytest.mark.parametrize("steps, warned", [(2, False), (500, True)])
def test_many_epochs_warn(tmp_path, steps, warned):
    data = write_jsonl(tmp_path / "c.jsonl", [conversation(i) for i in range(40)])
    found = check(["data=chat", f"data.train_files=[{data}]", f"train.max_steps={steps}", "train.batch_size=4",
                   "train.seq_len=128"], "data.epochs")
    assert bool(found) == warned
    if warned:
        assert found[0].paths == ("train.max_steps", "data.train_files") and "passes" in found[0].message
