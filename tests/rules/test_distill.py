"""distill.tokenizer_shared: teacher and student vocabularies."""

from __future__ import annotations

RID = "distill.tokenizer_shared"


def _distill(teacher, tok=None, *extra):
    return ["init=distill", f"init.distill.teacher_path={teacher}", *([f"data.tokenizer={tok}"] if tok else []), *extra]


def test_shared_tokenizer_and_vocab_pass(check, make_checkpoint):
    teacher = make_checkpoint("teacher", tokenizer_size=4096)
    assert check(_distill(teacher, teacher / "tokenizer.json"), RID) == []


def test_vocab_size_mismatch_is_an_error(check, make_checkpoint):
    teacher = make_checkpoint("teacher", tokenizer_size=4096)
    (v,) = check(_distill(teacher, teacher / "tokenizer.json", "model.vocab_size=2048"), RID)
    assert "2048" in v.message and "4096" in v.message and v.fix == "set model.vocab_size=4096"


def test_null_tokenizer_reuses_the_teachers_or_would_train_a_different_one(check, make_checkpoint):
    teacher = make_checkpoint("teacher", tokenizer_size=4096)
    assert check(_distill(teacher), RID) == []  # the tokenizer stage takes the teacher's tokenizer.json
    bare = make_checkpoint("bare_teacher")
    (v,) = check(_distill(bare), RID)
    assert "newly trained" in v.message and "no tokenizer.json" in v.message


def test_differing_tokens_are_counted(check, make_checkpoint, tokenizer_file, tmp_path):
    teacher = make_checkpoint("teacher", tokenizer_size=4096)
    other = tokenizer_file(tmp_path / "student" / "tokenizer.json", 4096, prefix="s")
    (v,) = check(_distill(teacher, other), RID)
    # 4095 's*' tokens vs 4095 't*' tokens: each side has tokens the other lacks; '<|eos|>' matches
    assert "differ on 8190 token(s)" in v.message and "'s0': 0 vs -" in v.message


def test_teacher_without_tokenizer_is_a_warning(check, make_checkpoint, tokenizer_file, tmp_path):
    teacher = make_checkpoint("teacher")
    tok = tokenizer_file(tmp_path / "tok" / "tokenizer.json", 4096)
    (v,) = check(_distill(teacher, tok), RID)
    assert v.severity == "warning"
    big = tokenizer_file(tmp_path / "big" / "tokenizer.json", 5000)
    assert check(_distill(teacher, big, "model.vocab_size=4096"), RID, "error")
