"""train.precision_supported_by_host, train.steps_cover_warmup, train.kind_matches_init, train.parallel_supported."""

from __future__ import annotations


def test_fp16_on_a_cpu_host_is_an_error(check):
    (v,) = check(["train.precision=fp16"], "train.precision_supported_by_host")
    assert "fp32, bf16" in v.message and "CPU autocast" in v.message and "train.precision=bf16" in v.fix


def test_host_precisions_pass(check):
    assert check(["train.precision=bf16"], "train.precision_supported_by_host") == []
    cuda = ["host.accelerator=cuda", "host.precisions=[fp32,fp16,bf16]", "train.precision=fp16"]
    assert check(cuda, "train.precision_supported_by_host") == []
    assert check(["train=none", "train.precision=fp16"], "train.precision_supported_by_host") == []


def test_bf16_on_a_host_without_it(check):
    (v,) = check(["host.precisions=[fp32]", "train.precision=bf16"], "train.precision_supported_by_host")
    assert "train.precision=fp32" in v.fix


def test_warmup_longer_than_training_warns(check):
    (v,) = check(["train.warmup_steps=300"], "train.steps_cover_warmup")
    assert v.severity == "warning" and "train.warmup_steps=20" in v.fix
    assert check([], "train.steps_cover_warmup") == []


def test_distillation_without_training_is_an_error(check):
    (v,) = check(["init=distill", "init.distill.teacher_path=/nowhere", "train=none"], "train.kind_matches_init")
    assert v.severity == "error"


def test_scratch_without_training_or_with_lora_warns(check):
    assert [v.severity for v in check(["train=none"], "train.kind_matches_init")] == ["warning"]
    assert [v.severity for v in check(["train=lora"], "train.kind_matches_init")] == ["warning"]
    assert check([], "train.kind_matches_init") == []


FSDP = ["train.parallel=fsdp", "host.num_processes=2"]


def test_fsdp_for_full_weight_training_passes(check):
    assert check(FSDP, "train.parallel_supported") == []
    assert check([*FSDP, "train=finetune", "init=pretrained", "init.path=/models/base"], "train.parallel_supported") == []
    assert check(["train=lora", "init=pretrained", "init.path=/models/base"], "train.parallel_supported") == []  # ddp


def test_fsdp_refuses_lora_qat_and_distillation(check):
    base = ["init=pretrained", "init.path=/models/base"]
    for extra, path in (([*base, "train=lora"], "train.kind"), ([*base, "train=qat"], "train.kind"),
                        (["init=distill", "init.distill.teacher_path=/t"], "init.kind")):
        (v,) = check([*FSDP, *extra], "train.parallel_supported")
        assert v.severity == "error" and v.paths == ("train.parallel", path), extra
        assert "train.parallel=ddp" in v.fix


def test_fsdp_in_one_process_warns_that_nothing_is_sharded(check):
    (v,) = check(["train.parallel=fsdp"], "train.parallel_supported")
    assert v.severity == "warning" and "plainly" in v.message
    assert check(["train.parallel=fsdp", "train=none"], "train.parallel_supported") == []
