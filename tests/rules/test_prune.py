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


GEMMA = dict(model_type="gemma3_text", architectures=["Gemma3ForCausalLM"], head_dim=32, sliding_window=64,
             layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"])


def test_every_family_may_prune_all_three_axes(check, make_checkpoint):
    overrides = ["init.prune.layer_ratio=0.5", "init.prune.kv_group_ratio=0.5", "init.prune.mlp_ratio=0.5"]
    for config in ({}, GEMMA, dict(model_type="qwen3", architectures=["Qwen3ForCausalLM"], head_dim=32)):
        ckpt = make_checkpoint(config.get("model_type", "llama"), **config)
        assert check(["init=prune", f"init.path={ckpt}", *overrides], "prune.family_axes") == []


def test_an_axis_missing_from_the_family_is_refused_naming_it(check, make_checkpoint, monkeypatch):
    import dataclasses

    from slmc import families

    llama = families.get("llama")
    monkeypatch.setitem(families.FAMILIES, "llama", dataclasses.replace(llama, prune_axes=("mlp_channels",)))
    ckpt = make_checkpoint()
    vs = check(["init=prune", f"init.path={ckpt}", "init.prune.keep_layers=[0,1]", "init.prune.kv_group_ratio=0.5"],
               "prune.family_axes")
    assert [(v.paths[0], v.severity) for v in vs] == [("init.prune.keep_layers", "error"),
                                                      ("init.prune.kv_group_ratio", "error")]
    assert all("llama checkpoints cannot be pruned along" in v.message and "along: mlp_channels" in v.message
               for v in vs)
    assert vs[0].fix == "leave init.prune.keep_layers unset" and vs[1].fix == "set init.prune.kv_group_ratio=1.0"
    assert check(["init=prune", f"init.path={ckpt}", "init.prune.layer_ratio=1", "init.prune.mlp_ratio=0.5"],
                 "prune.family_axes") == []


def test_longrope_phi3_cannot_lose_kv_groups(check, make_checkpoint):
    ckpt = make_checkpoint(model_type="phi3", architectures=["Phi3ForCausalLM"], partial_rotary_factor=0.75,
                           original_max_position_embeddings=128,
                           rope_scaling={"type": "longrope", "long_factor": [1.0] * 12, "short_factor": [1.0] * 12})
    (v,) = check(["init=prune", f"init.path={ckpt}", "init.prune.kv_group_ratio=0.5"], "prune.family_axes")
    assert "phi3" in v.message and "longrope" in v.message and "256 / 8" in v.message
    assert check(["init=prune", f"init.path={ckpt}"], "prune.family_axes") == []  # layers and MLP still prune


def test_keep_layers_without_a_full_attention_layer_is_a_warning(check, make_checkpoint):
    ckpt = make_checkpoint(**GEMMA)
    (v,) = check(["init=prune", f"init.path={ckpt}", "init.prune.keep_layers=[0,2]"], "prune.keeps_full_attention")
    assert v.severity == "warning" and "full attention in layers [1, 3]" in v.message and "64 tokens" in v.message
    kept_full = ["init=prune", f"init.path={ckpt}", "init.prune.keep_layers=[0,3]"]
    assert check(kept_full, "prune.keeps_full_attention") == []
    assert check(["init=prune", f"init.path={ckpt}"], "prune.keeps_full_attention") == []  # ratios keep each kind
    plain = make_checkpoint("llama")
    assert check(["init=prune", f"init.path={plain}", "init.prune.keep_layers=[0]"], "prune.keeps_full_attention") == []
