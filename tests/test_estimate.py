"""estimate.py against real transformers models and hand-worked numbers."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from slmc.estimate import (
    Arch, bytes_per_weight, decode_tokens_per_s, fmt_bytes, kv_cache_bytes, lora_params, param_count,
    prune_arch, training_memory, weight_bytes,
)
from slmc.load import load_config

torch.set_num_threads(1)


def _hf(arch_kwargs: dict, family: str):
    cls_cfg, cls_model = (Qwen2Config, Qwen2ForCausalLM) if family == "qwen2" else (LlamaConfig, LlamaForCausalLM)
    cfg = cls_cfg(**arch_kwargs)
    with torch.device("meta"):
        model = cls_model(cfg)
    return cfg, sum(p.numel() for p in model.parameters())


def _model_kwargs(m) -> dict:
    return dict(
        hidden_size=m.hidden_size, num_hidden_layers=m.num_hidden_layers, num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.num_key_value_heads, intermediate_size=m.intermediate_size, vocab_size=m.vocab_size,
        max_position_embeddings=m.max_position_embeddings, tie_word_embeddings=m.tie_word_embeddings,
    )


@pytest.mark.parametrize("preset", ["tiny", "small", "qwen2_tiny"])
def test_param_count_matches_transformers_for_shipped_models(preset):
    m = load_config([f"model={preset}"]).model
    _, expected = _hf(_model_kwargs(m), m.family)
    assert param_count(Arch.from_model(m)) == expected


@pytest.mark.parametrize(
    "family,extra",
    [
        ("llama", dict(num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=False)),  # GQA, untied
        ("llama", dict(num_attention_heads=8, num_key_value_heads=1, tie_word_embeddings=True)),   # MQA, tied
        ("llama", dict(num_attention_heads=8, num_key_value_heads=8, attention_bias=True, mlp_bias=True)),
        ("llama", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=48)),                 # explicit head_dim
        ("qwen2", dict(num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=False)),
    ],
)
def test_param_count_matches_transformers_variants(family, extra):
    kwargs = dict(hidden_size=96 if "head_dim" not in extra else 64, num_hidden_layers=3, intermediate_size=200,
                  vocab_size=300, max_position_embeddings=128)
    kwargs.update(extra)
    hf_cfg, expected = _hf(kwargs, family)
    arch = Arch.from_hf_config(hf_cfg.to_dict())
    assert arch.family == family
    assert param_count(arch) == expected


def test_small_model_sizes_match_the_measured_bundles():
    """The 35.7M model's bundles measured on disk: fp32 144 MB, int8 43 MB, int4 30 MB (docs/architecture.md)."""
    arch = Arch.from_model(load_config(["model=small"]).model)
    assert round(param_count(arch) / 1e5) == 357  # "35.7M"
    assert weight_bytes(arch, "fp32").total == pytest.approx(144e6, rel=0.02)
    assert weight_bytes(arch, "int8").total == pytest.approx(43e6, rel=0.05)  # measured without the embedding
    assert weight_bytes(arch, "int4", block_size=32).total == pytest.approx(30e6, rel=0.05)
    assert weight_bytes(arch, "int4", quantize_embedding=True).total < weight_bytes(arch, "int4").total


def test_bytes_per_weight():
    assert bytes_per_weight("fp32") == 4 and bytes_per_weight("fp16") == 2 and bytes_per_weight("bf16") == 2
    assert bytes_per_weight("int8") == 1 and bytes_per_weight("int8", channel_len=100) == pytest.approx(1.05)
    assert bytes_per_weight("int4", block_size=32) == pytest.approx(0.5 + 4 / 32)
    assert bytes_per_weight("int4", block_size=32, symmetric=False) == pytest.approx(0.5 + 4.5 / 32)
    assert bytes_per_weight("int4", block_size=128) < bytes_per_weight("int4", block_size=32)


def test_tied_float_embedding_stored_once_and_quantized_head_added():
    arch = Arch.from_model(load_config(["model=tiny"]).model)  # tied
    table = arch.vocab_size * arch.hidden_size
    fp32 = weight_bytes(arch, "fp32")
    assert fp32.total == pytest.approx(param_count(arch) * 4)
    assert fp32.embedding == 0 and fp32.head == table * 4
    int8 = weight_bytes(arch, "int8")
    assert int8.embedding == table * 4 and int8.head == pytest.approx(table * (1 + 5 / arch.hidden_size))


def test_kv_cache_bytes_formula():
    arch = Arch.from_model(load_config(["model=small"]).model)  # 10 layers, 4 kv heads, head_dim 64
    assert kv_cache_bytes(arch, 256, 2, 4) == 2 * 10 * 4 * 64 * 256 * 2 * 4


def test_training_memory_full_lora_distill():
    arch = Arch.from_model(load_config(["model=small"]).model)
    p = param_count(arch)
    full = training_memory(arch, batch=4, seq_len=64, act_bytes=4, math_attention=True)
    assert (full.weights, full.grads, full.optimizer) == (4 * p, 4 * p, 8 * p)
    adapters = lora_params(arch, ["q_proj", "v_proj"], 8)
    assert adapters == 10 * 8 * ((512 + 512) + (512 + 256))
    lora = training_memory(arch, batch=4, seq_len=64, act_bytes=4, math_attention=True, trainable=adapters)
    assert lora.grads == 4 * adapters and lora.optimizer == 8 * adapters and lora.weights == 4 * (p + adapters)
    assert lora.total < full.total
    distill = training_memory(arch, batch=4, seq_len=64, act_bytes=4, math_attention=True, teacher=arch)
    assert distill.teacher == 4 * p + 4 * 64 * arch.vocab_size * 4
    half = training_memory(arch, batch=4, seq_len=64, act_bytes=2, math_attention=False)
    assert half.activations < full.activations


def test_decode_upper_bound():
    arch = Arch.from_model(load_config(["model=small"]).model)
    tps, w, kv = decode_tokens_per_s(arch, "int4", 68.0, 128)
    assert w == weight_bytes(arch, "int4").read_per_token
    assert kv == kv_cache_bytes(arch, 128, 1, 4)
    assert tps == pytest.approx(68e9 / (w + kv))
    assert decode_tokens_per_s(arch, "fp32", 68.0, 128)[0] < tps


def test_prune_arch_keeps_whole_groups():
    src = Arch.from_model(load_config(["model=small"]).model)  # 8 heads, 4 kv, mlp 1536, 10 layers
    plan = prune_arch(src, layer_ratio=0.5, kv_group_ratio=0.5, mlp_ratio=0.5)
    assert not plan.problems
    a = plan.arch
    assert (a.num_hidden_layers, a.num_key_value_heads, a.num_attention_heads) == (5, 2, 4)
    assert a.head_dim == 64 and a.head_dim_explicit and a.intermediate_size == 768
    bad = prune_arch(src, layer_ratio=1, kv_group_ratio=1, mlp_ratio=1, keep_layers=[0, 0, 12])
    assert any("out of range" in p for p in bad.problems) and any("repeats" in p for p in bad.problems)
    assert bad.kept_layers == (0,)
    uneven = prune_arch(Arch.from_model(load_config(["model.num_key_value_heads=3"]).model),
                        layer_ratio=1, kv_group_ratio=0.5, mlp_ratio=1)
    assert uneven.arch is None and "cannot be pruned" in uneven.group_problem


def test_fmt_bytes():
    assert fmt_bytes(1.234e9) == "1.23 GB" and fmt_bytes(512e6) == "512 MB" and fmt_bytes(12) == "12 B"
