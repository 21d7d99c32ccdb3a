"""prune.keeps_divisibility on pruned shapes computed from the source checkpoint."""

from __future__ import annotations

RID = "prune.keeps_divisibility"


def test_shipped_prune_of_a_valid_source_passes(check, make_checkpoint):
    ckpt = make_checkpoint()
    assert check(["init=prune", f"init.path={ckpt}"], RID) == []
    assert check(["init=prune", f"init.path={ckpt}", "init.prune.kv_group_ratio=0.5"], RID) == []


def test_keep_layers_out_of_range_or_repeated(check, make_checkpoint):
    ckpt = make_checkpoint()  # 4 layers
    vs = check(["init=prune", f"init.path={ckpt}", "init.prune.keep_layers=[0,1,1,7]"], RID)
    text = " | ".join(v.message for v in vs)
    assert "[7] out of range" in text and "0..3" in text and "repeats [1]" in text
    assert all(v.severity == "error" for v in vs)


def test_source_without_whole_kv_groups_is_rejected(check, make_checkpoint):
    ckpt = make_checkpoint(num_attention_heads=8, num_key_value_heads=3)
    (v,) = check(["init=prune", f"init.path={ckpt}", "init.prune.kv_group_ratio=0.5"], RID)
    assert "not a multiple of num_key_value_heads 3" in v.message


def test_mqa_source_cannot_lose_groups(check, make_checkpoint):
    ckpt = make_checkpoint(num_key_value_heads=1)
    (v,) = check(["init=prune", f"init.path={ckpt}", "init.prune.kv_group_ratio=0.5"], RID)
    assert v.severity == "warning" and "MQA" in v.fix and "pruned: layers 2" in v.message


def test_narrow_mlp_cannot_round_to_a_multiple_of_8(check, make_checkpoint):
    ckpt = make_checkpoint(intermediate_size=6)
    (v,) = check(["init=prune", f"init.path={ckpt}"], RID)
    assert v.severity == "warning" and "MLP width 3" in v.message


def test_odd_head_dim_source_is_reported(check, make_checkpoint):
    ckpt = make_checkpoint(hidden_size=120, num_attention_heads=8, num_key_value_heads=4)
    (v,) = check(["init=prune", f"init.path={ckpt}"], RID)
    assert "head_dim 15 is odd" in v.message


def test_other_inits_are_not_checked(check):
    assert check(["init=scratch", "init.prune.keep_layers=[9]"], RID) == []
