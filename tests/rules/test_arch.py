"""arch.heads_divide_hidden, arch.kv_heads_divide_heads, arch.rope_head_dim_even."""

from __future__ import annotations

import pytest

IDS = ("arch.heads_divide_hidden", "arch.kv_heads_divide_heads", "arch.rope_head_dim_even")


@pytest.mark.parametrize("model", ["tiny", "small", "qwen2_tiny"])
def test_shipped_models_pass(check, model):
    for rid in IDS:
        assert check([f"model={model}"], rid) == []


def test_heads_must_divide_hidden(check):
    (v,) = check(["model.num_attention_heads=6"], "arch.heads_divide_hidden")  # 128 / 6
    assert "128" in v.message and "6" in v.message
    assert "num_attention_heads=4 (head_dim 32)" in v.fix or "num_attention_heads=8 (head_dim 16)" in v.fix
    assert check(["model.num_attention_heads=6"], "arch.rope_head_dim_even") == []  # not reported twice


def test_kv_heads_must_divide_heads(check):
    (v,) = check(["model.num_key_value_heads=3"], "arch.kv_heads_divide_heads")
    assert "4" in v.message and "3" in v.message and "num_key_value_heads=2" in v.fix
    assert check(["model.num_key_value_heads=1"], "arch.kv_heads_divide_heads") == []  # MQA
    assert check(["model.num_key_value_heads=8"], "arch.kv_heads_divide_heads")  # more KV than query heads


def test_rope_needs_an_even_head_dim(check):
    (v,) = check(["model.hidden_size=120", "model.num_attention_heads=8"], "arch.rope_head_dim_even")  # 15
    assert "head_dim 15" in v.message and "num_attention_heads=" in v.fix


def test_checkpoint_architecture_is_checked_for_pretrained(check, make_checkpoint):
    ckpt = make_checkpoint(num_attention_heads=8, num_key_value_heads=3)
    (v,) = check(["init=pretrained", f"init.path={ckpt}"], "arch.kv_heads_divide_heads")
    assert v.paths == ("init.path", "init.path")
    # Qwen2Config accepts an explicit head_dim that does not divide hidden_size; LlamaConfig refuses it.
    explicit = make_checkpoint("explicit", num_attention_heads=6, num_key_value_heads=2, head_dim=64,
                               model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    assert check(["init=pretrained", f"init.path={explicit}"], "arch.heads_divide_hidden") == []
    llama = make_checkpoint("explicit_llama", num_attention_heads=6, num_key_value_heads=2, head_dim=64)
    (v,) = check(["init=pretrained", f"init.path={llama}"], "arch.heads_divide_hidden")
    assert "256" in v.message and "6" in v.message
