"""Llama: Llama 2/3.x, SmolLM/SmolLM2, TinyLlama and every `LlamaForCausalLM` checkpoint.

Llama 3.1+ extend the context with `llama3` RoPE scaling (a fixed rescale of the rotary
frequencies, so the exported graph is the same at every length). `attention_bias` puts
biases on q, k, v and o; `mlp_bias` on gate, up and down.
"""

from .spec import Family, frozen

FAMILY = Family(
    name="llama",
    model_types=("llama",),
    causal_lm_class="LlamaForCausalLM",
    published=("HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-360M", "meta-llama/Llama-3.2-1B"),
    genai_type="llama",
    qkv_bias="attention_bias",
    o_bias="attention_bias",
    mlp_bias="mlp_bias",
    rope_types=frozenset({"default", "linear", "dynamic", "yarn", "llama3"}),
    heads_divide_hidden=True,
    config_defaults=frozen({
        "max_position_embeddings": 2048, "tie_word_embeddings": False, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    }),
    tensorrt_notes=(
        "standard decoder: RoPE, GQA and RMSNorm export as plain ONNX ops the TensorRT parser takes",
    ),
)
