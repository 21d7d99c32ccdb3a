"""Mistral 7B (v0.1-v0.3) and Mistral-shaped small models: Llama's layout with one
`sliding_window` for every layer (4096 in v0.1, null from v0.2 on), no biases."""

from .spec import Family, frozen

FAMILY = Family(
    name="mistral",
    model_types=("mistral",),
    causal_lm_class="MistralForCausalLM",
    published=("mistralai/Mistral-7B-v0.3", "mistralai/Mistral-7B-v0.1"),
    genai_type="mistral",
    window="sliding_window",
    rope_types=frozenset({"default", "linear", "dynamic", "yarn"}),
    config_defaults=frozen({
        "num_key_value_heads": 8, "max_position_embeddings": 131072, "tie_word_embeddings": False,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "sliding_window": 4096,
    }),
    tensorrt_notes=("a sliding window is a banded attention mask built from standard ops",),
)
