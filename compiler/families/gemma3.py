"""Gemma 3 text decoders (Gemma-3-1B, and the text tower of the larger ones as `gemma3_text`).

What differs from Llama: a per-layer pattern of sliding and full attention (`layer_types`,
or the older `sliding_window_pattern`: every n-th layer full), separate RoPE bases for the
two kinds, qk-norm, queries scaled by `query_pre_attn_scalar`, optional tanh soft-capping,
four RMSNorms per layer (pre/post attention and MLP), GELU-tanh MLP, and embeddings scaled
by sqrt(hidden_size). The multimodal `gemma3` wrapper is a different architecture.
"""

from .spec import Family, frozen

FAMILY = Family(
    name="gemma3",
    model_types=("gemma3_text",),
    causal_lm_class="Gemma3ForCausalLM",
    published=("google/gemma-3-1b-pt", "google/gemma-3-1b-it"),
    genai_type="gemma3_text",
    qkv_bias="attention_bias",
    o_bias="attention_bias",
    qk_norm=True,
    window="layer_types",
    logit_softcapping=True,
    query_pre_attn_scalar=True,
    rope_types=frozenset({"default", "linear"}),
    heads_divide_hidden=True,
    norms_per_layer=4,
    embedding_scale="sqrt_hidden",
    config_defaults=frozen({
        "num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 131072, "tie_word_embeddings": True,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "sliding_window": 4096, "sliding_window_pattern": 6,
        "query_pre_attn_scalar": 256,
    }),
    tensorrt_notes=(
        "sliding layers need a banded attention mask next to the causal one; both are built from standard ops",
        "soft-capping is tanh(x / cap) * cap: standard ops",
    ),
)
