"""shape.seq_within_context and shape.profile_covers_runtime."""

from __future__ import annotations


def test_export_longer_than_context_is_rejected(check):
    (v,) = check(["export.max_seq_len=1024"], "shape.seq_within_context")  # tiny: 512 positions
    assert v.severity == "error" and "1024" in v.message and "512" in v.message
    assert "export.max_seq_len=512" in v.fix and "model.max_position_embeddings=1024" in v.fix
    assert check(["export.max_seq_len=512"], "shape.seq_within_context") == []


def test_train_seq_len_only_counts_when_training(check):
    (v,) = check(["train.seq_len=600"], "shape.seq_within_context")
    assert v.paths[0] == "train.seq_len"
    assert check(["train=none", "train.seq_len=600"], "shape.seq_within_context") == []


def test_checkpoint_context_is_used_for_pretrained_and_prune(check, make_checkpoint):
    ckpt = make_checkpoint(max_position_embeddings=128, tokenizer_size=4096)
    for init in ("pretrained", "prune"):
        vs = check([f"init={init}", f"init.path={ckpt}", "train=finetune"], "shape.seq_within_context")
        assert {v.paths for v in vs} == {("export.max_seq_len", "init.path")}  # 256 > 128; train 128 fits
        assert "model.max_position_embeddings" not in vs[0].fix
    assert check(["init=pretrained", f"init.path={ckpt}", "export.max_seq_len=128"], "shape.seq_within_context") == []


def test_teacher_context_bounds_distillation(check, make_checkpoint):
    teacher = make_checkpoint("teacher", max_position_embeddings=64)
    (v,) = check(["init=distill", f"init.distill.teacher_path={teacher}"], "shape.seq_within_context")
    assert "teacher" in v.message and "train.seq_len=64" in v.fix


def test_tensorrt_opt_shape_above_max_is_rejected(check):
    trt = ["device=jetson_orin_nano", "runtime=tensorrt"]
    (v,) = check([*trt, "runtime.opt_seq_len=512"], "shape.profile_covers_runtime")
    assert "opt_seq_len=512" in v.message and "runtime.opt_seq_len=128" in v.fix
    assert check([*trt, "runtime.opt_seq_len=200"], "shape.profile_covers_runtime") == []


def test_generation_must_leave_room_for_a_prompt(check):
    (v,) = check(["generation.max_new_tokens=256"], "shape.profile_covers_runtime")
    assert v.severity == "error" and "no room" in v.message
    (w,) = check(["generation.max_new_tokens=250"], "shape.profile_covers_runtime")
    assert w.severity == "warning" and "only 6 tokens" in w.message
    assert check([], "shape.profile_covers_runtime") == []
