"""qat.requires_train_stage."""

from __future__ import annotations

RID = "qat.requires_train_stage"


def test_qat_for_int8_passes(check):
    assert check(["train=qat", "compress=int8"], RID) == []


def test_qat_without_steps_is_an_error(check):
    (v,) = check(["train=qat", "compress=int8", "train.max_steps=0"], RID)
    assert v.severity == "error" and "max_steps=0" in v.message


def test_qat_deployed_as_float_is_wasted(check):
    (v,) = check(["train=qat", "compress=none"], RID)
    assert v.severity == "warning" and "wasted" in v.message and "compress=int8" in v.fix


def test_qat_deployed_on_another_grid_is_an_error(check):
    (v,) = check(["train=qat", "compress=int4"], RID)
    assert v.severity == "error" and "int4" in v.message


def test_other_train_kinds_are_not_checked(check):
    assert check(["train=pretrain", "compress=none"], RID) == []
