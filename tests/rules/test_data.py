"""data.paths_exist, init.path_required, data.vocab_matches_model."""

from __future__ import annotations

import json


def test_missing_training_files_are_named_one_by_one(check, tmp_path):
    good = tmp_path / "a.txt"
    good.write_text("hello")
    vs = check(["data=files", f"data.train_files=[{good},{tmp_path / 'b.txt'}]",
                f"data.heldout_files=[{tmp_path / 'c.jsonl'}]"], "data.paths_exist")
    assert sorted(v.message.split(":")[0] for v in vs) == ["data.heldout_files[0]", "data.train_files[1]"]
    assert check(["data=files", f"data.train_files=[{good}]"], "data.paths_exist") == []


def test_empty_file_list_and_folder_instead_of_file(check, tmp_path):
    (v,) = check(["data=files", "data.train_files=[]"], "data.paths_exist")
    assert "empty" in v.message
    (v,) = check([f"data.tokenizer={tmp_path}"], "data.paths_exist")
    assert "is a folder" in v.message


def test_checkpoint_without_weights_or_with_bad_config(check, make_checkpoint, tmp_path):
    ckpt = make_checkpoint(weights=False)
    (v,) = check(["init=pretrained", f"init.path={ckpt}"], "data.paths_exist")
    assert "lacks weights" in v.message
    broken = make_checkpoint("broken")
    (broken / "config.json").write_text("{")
    # a broken config.json is the checkpoint rules' to report, naming the file (tests/families)
    assert check(["init=prune", f"init.path={broken}"], "data.paths_exist") == []
    (v,) = check(["init=prune", f"init.path={broken}"], "checkpoint.config_valid")
    assert "config.json is not valid JSON" in v.message
    good = make_checkpoint("good")
    assert check(["init=pretrained", f"init.path={good}"], "data.paths_exist") == []


def test_teacher_path_is_checked(check, tmp_path):
    (v,) = check(["init=distill", f"init.distill.teacher_path={tmp_path / 'teacher'}"], "data.paths_exist")
    assert v.paths == ("init.distill.teacher_path",) and "does not exist" in v.message


def test_init_path_required(check):
    (v,) = check(["init=pretrained", "init.path=null"], "init.path_required")
    assert "init.path" in v.fix
    (v,) = check(["init=distill", "init.distill.teacher_path=null"], "init.path_required")
    assert v.paths == ("init.distill.teacher_path",)
    assert check([], "init.path_required") == []


def test_tokenizer_larger_than_the_model_vocab_is_an_error(check, tokenizer_file, tmp_path):
    tok = tokenizer_file(tmp_path / "tokenizer.json", 5000)
    (v,) = check([f"data.tokenizer={tok}"], "data.vocab_matches_model")
    assert v.severity == "error" and "ids up to 4999" in v.message and v.fix == "set model.vocab_size=5000"
    assert check([f"data.tokenizer={tok}", "model.vocab_size=5000"], "data.vocab_matches_model") == []


def test_tokenizer_smaller_than_the_model_vocab_warns(check, tokenizer_file, tmp_path):
    tok = tokenizer_file(tmp_path / "tokenizer.json", 4000)
    (v,) = check([f"data.tokenizer={tok}"], "data.vocab_matches_model")
    assert v.severity == "warning" and "96 embedding rows" in v.message


def test_locally_trained_tokenizer_needs_room_for_bytes(check):
    (v,) = check(["model.vocab_size=200"], "data.vocab_matches_model")
    assert "259" in v.message
    assert check([], "data.vocab_matches_model") == []


def test_checkpoint_tokenizer_is_compared_with_the_checkpoint_vocab(check, make_checkpoint):
    ckpt = make_checkpoint(tokenizer_size=5000)  # config says 4096
    (v,) = check(["init=pretrained", f"init.path={ckpt}"], "data.vocab_matches_model")
    assert v.paths == ("init.path", "init.path")
    bare = make_checkpoint("bare")
    (v,) = check(["init=pretrained", f"init.path={bare}"], "data.vocab_matches_model")
    assert "no tokenizer.json" in v.message


def test_padded_checkpoint_vocab_is_fine(check, make_checkpoint):
    ckpt = make_checkpoint(tokenizer_size=4000)  # vocab_size 4096: padded, as Qwen2 checkpoints are
    assert check(["init=pretrained", f"init.path={ckpt}"], "data.vocab_matches_model") == []
    assert json.loads((ckpt / "config.json").read_text())["vocab_size"] == 4096


def _files(tmp_path, name: str, data: bytes) -> list[str]:
    path = tmp_path / name
    path.write_bytes(data)
    return ["data=files", f"data.train_files=[{path}]"]


def test_text_files_pass_files_are_text(check, tmp_path):
    assert check(_files(tmp_path, "a.txt", "héllo\nworld\n".encode()), "data.files_are_text") == []
    assert check(_files(tmp_path, "b.jsonl", b'{"text": "a \\ud83d\\ude00 pair"}\n{"text": "x"}\n'),
                 "data.files_are_text") == []


def test_a_nul_byte_is_binary_data_named_by_file_and_line(check, tmp_path):
    """A NUL-only file once trained for a minute before failing for lack of tokens."""
    (v,) = check(_files(tmp_path, "zeros.txt", b"\x00" * 4096), "data.files_are_text")
    assert v.severity == "error" and v.paths == ("data.train_files",)
    assert f"{tmp_path / 'zeros.txt'}:1: a NUL byte" in v.message and "UTF-8" in v.fix
    (v,) = check(_files(tmp_path, "utf16.txt", "line one\nline two\n".encode("utf-16-le")), "data.files_are_text")
    assert "utf16.txt:1:" in v.message and "UTF-16" in v.fix
    (v,) = check(_files(tmp_path, "late.txt", b"ok\nfine\n\x00\n"), "data.files_are_text")
    assert "late.txt:3:" in v.message


def test_a_lone_surrogate_in_jsonl_is_named_by_file_and_line(check, tmp_path):
    (v,) = check(_files(tmp_path, "s.jsonl", b'{"text": "ok"}\n{"text": "a \\ud800 b"}\n'), "data.files_are_text")
    assert "s.jsonl:2: field 'text' holds a lone surrogate \\ud800" in v.message


def test_broken_records_and_bad_utf8_at_the_start_are_found_at_check_time(check, tmp_path):
    (v,) = check(_files(tmp_path, "bad.jsonl", b'{"text": "ok"}\n{"text": \n'), "data.files_are_text")
    assert "bad.jsonl:2: invalid JSON" in v.message
    (v,) = check(_files(tmp_path, "field.jsonl", b'{"body": "ok"}\n'), "data.files_are_text")
    assert v.paths == ("data.jsonl_field",) and "no string field 'text'" in v.message
    (v,) = check(_files(tmp_path, "latin1.txt", "café\n".encode("latin-1")), "data.files_are_text")
    assert "is not UTF-8 text" in v.message


def test_only_the_head_of_a_large_file_is_read_at_check_time(check, tmp_path):
    """A record past the first 64 KiB is the data stage's to refuse (tests/hardening/test_data_files.py);
    a multi-byte character cut by the 64 KiB boundary is not an error."""
    from slmc.stages.data import SAMPLE_BYTES

    head = b'{"text": "' + "é".encode() * (SAMPLE_BYTES // 2) + b'"}\n'
    assert check(_files(tmp_path, "big.jsonl", head + b'{"text": "\\ud800"}\n'), "data.files_are_text") == []
    assert check(_files(tmp_path, "cut.txt", b"a" + "é".encode() * SAMPLE_BYTES), "data.files_are_text") == []
