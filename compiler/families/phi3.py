"""Phi-3 / Phi-3.5 / Phi-4-mini: fused qkv and gate_up projections, partial rotary, long-rope.

q, k and v live in one `qkv_proj` and gate/up in one `gate_up_proj`, so LoRA targets and
pruning slices address the fused weights. Phi-4-mini rotates 3/4 of each head
(`partial_rotary_factor`); the 128k models switch from short to long RoPE factors past
`original_max_position_embeddings` (`longrope`; older configs say `su` or `yarn`).
Phi-3-mini-4k sets `sliding_window` (2047) for every layer.
"""

from .spec import Family, frozen

FAMILY = Family(
    name="phi3",
    model_types=("phi3",),
    causal_lm_class="Phi3ForCausalLM",
    published=("microsoft/Phi-3-mini-4k-instruct", "microsoft/Phi-3.5-mini-instruct", "microsoft/Phi-4-mini-instruct"),
    genai_type="phi3",
    window="sliding_window",
    partial_rotary=True,
    rope_types=frozenset({"default", "longrope"}),
    rope_aliases=frozen({"su": "longrope", "yarn": "longrope"}),
    fused_qkv=True,
    fused_gate_up=True,
    config_defaults=frozen({
        "max_position_embeddings": 4096, "original_max_position_embeddings": 4096, "tie_word_embeddings": False,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "sliding_window": None, "partial_rotary_factor": 1.0,
    }),
    tensorrt_notes=(
        "fused qkv_proj / gate_up_proj export as one MatMul each followed by Slice/Split",
        "longrope's short/long factor switch depends on the sequence length: a static graph holds one of them",
    ),
)
