"""Qwen3 (dense): Qwen2's layout without q/k/v biases, plus qk-norm.

Each head's query and key pass an RMSNorm (head_dim weights) before RoPE, and head_dim
is its own field (128 on the published models, not hidden_size / heads).
"""

from .spec import Family, frozen

FAMILY = Family(
    name="qwen3",
    model_types=("qwen3",),
    causal_lm_class="Qwen3ForCausalLM",
    published=("Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B"),
    genai_type="qwen3",
    qkv_bias="attention_bias",
    o_bias="attention_bias",
    qk_norm=True,
    window="layer_types",
    rope_types=frozenset({"default", "linear", "dynamic", "yarn"}),
    config_defaults=frozen({
        "num_key_value_heads": 32, "head_dim": 128, "max_position_embeddings": 32768, "tie_word_embeddings": False,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "sliding_window": 4096, "use_sliding_window": False,
        "max_window_layers": 28,
    }),
    tensorrt_notes=("qk-norm adds two per-head RMSNorms (ReduceMean/Pow/Sqrt) per layer; all standard ops",),
)
