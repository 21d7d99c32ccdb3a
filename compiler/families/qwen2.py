"""Qwen2 / Qwen2.5: a Llama-shaped decoder with biases on q, k and v (never on o).

Sliding-window attention is declared per layer: `use_sliding_window` with
`max_window_layers` (layers from that index on slide), which transformers turns into
`layer_types`; the published Qwen2.5 checkpoints leave it off.
"""

from .spec import Family, frozen

FAMILY = Family(
    name="qwen2",
    model_types=("qwen2",),
    causal_lm_class="Qwen2ForCausalLM",
    published=("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-1.5B"),
    genai_type="qwen2",
    qkv_bias="always",
    window="layer_types",
    rope_types=frozenset({"default", "linear", "dynamic", "yarn"}),
    config_defaults=frozen({
        "num_key_value_heads": 32, "max_position_embeddings": 32768, "tie_word_embeddings": False,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "sliding_window": 4096, "use_sliding_window": False,
        "max_window_layers": 28,
    }),
    tensorrt_notes=("q/k/v biases are Add nodes after the MatMuls; nothing outside the parser's standard ops",),
)
