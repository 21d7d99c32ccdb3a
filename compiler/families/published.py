"""config.json values of the small checkpoints people deploy, as the Hub serves them.

Sizes as published, legacy `rope_scaling`/`rope_theta` keys included, so that whatever reads a
real checkpoint is tried on the real thing: the family tests cut these to 2 layers
(tests/families/conftest.py), and bench/stage_costs.py builds them at full depth with random
weights to measure what exporting, fusing and quantizing them costs. Plain data: importing it
costs nothing and needs neither torch nor pytest.
"""

from __future__ import annotations

PUBLISHED: dict[str, dict] = {
    "smollm2-135m": dict(  # HuggingFaceTB/SmolLM2-135M
        model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=576, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536, vocab_size=49152,
        max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
        hidden_act="silu", attention_bias=False, mlp_bias=False, bos_token_id=0, eos_token_id=0,
    ),
    "llama-3.2-1b": dict(  # meta-llama/Llama-3.2-1B
        model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=2048, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, intermediate_size=8192, vocab_size=128256,
        max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                      "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        hidden_act="silu", attention_bias=False, mlp_bias=False, bos_token_id=128000, eos_token_id=128001,
    ),
    "qwen2.5-0.5b": dict(  # Qwen/Qwen2.5-0.5B
        model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_size=896, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
        max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
        sliding_window=32768, use_sliding_window=False, max_window_layers=24, hidden_act="silu",
        bos_token_id=151643, eos_token_id=151643,
    ),
    "qwen3-0.6b": dict(  # Qwen/Qwen3-0.6B
        model_type="qwen3", architectures=["Qwen3ForCausalLM"], hidden_size=1024, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, intermediate_size=3072, vocab_size=151936,
        max_position_embeddings=40960, rope_theta=1000000, rms_norm_eps=1e-6, tie_word_embeddings=True,
        attention_bias=False, sliding_window=None, use_sliding_window=False, max_window_layers=28,
        hidden_act="silu", bos_token_id=151643, eos_token_id=151645,
    ),
    "gemma-3-1b": dict(  # google/gemma-3-1b-pt
        model_type="gemma3_text", architectures=["Gemma3ForCausalLM"], hidden_size=1152, num_hidden_layers=26,
        num_attention_heads=4, num_key_value_heads=1, head_dim=256, intermediate_size=6912, vocab_size=262144,
        max_position_embeddings=32768, query_pre_attn_scalar=256, sliding_window=512, sliding_window_pattern=6,
        rope_theta=1000000, rope_local_base_freq=10000, rope_scaling=None, rms_norm_eps=1e-6,
        final_logit_softcapping=None, attn_logit_softcapping=None, hidden_activation="gelu_pytorch_tanh",
        attention_bias=False, tie_word_embeddings=True, bos_token_id=2, eos_token_id=1, pad_token_id=0,
    ),
    "phi-3-mini-4k": dict(  # microsoft/Phi-3-mini-4k-instruct (its auto_map included)
        model_type="phi3", architectures=["Phi3ForCausalLM"],
        auto_map={"AutoConfig": "configuration_phi3.Phi3Config", "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM"},
        hidden_size=3072, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
        intermediate_size=8192, vocab_size=32064, max_position_embeddings=4096, original_max_position_embeddings=4096,
        rope_theta=10000.0, rope_scaling=None, sliding_window=2047, rms_norm_eps=1e-5, tie_word_embeddings=False,
        hidden_act="silu", bos_token_id=1, eos_token_id=32000, pad_token_id=32000,
    ),
    "phi-4-mini": dict(  # microsoft/Phi-4-mini-instruct: partial rotary + longrope (factor values not copied; count is)
        model_type="phi3", architectures=["Phi3ForCausalLM"], hidden_size=3072, num_hidden_layers=32,
        num_attention_heads=24, num_key_value_heads=8, intermediate_size=8192, vocab_size=200064,
        max_position_embeddings=131072, original_max_position_embeddings=4096, partial_rotary_factor=0.75,
        rope_theta=10000.0, rope_scaling={"type": "longrope", "long_factor": [1.0] * 48, "short_factor": [1.0] * 48},
        sliding_window=262144, rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu",
        bos_token_id=199999, eos_token_id=199999, pad_token_id=199999,
    ),
    "mistral-7b-v0.3": dict(  # mistralai/Mistral-7B-v0.3 (sliding_window null)
        model_type="mistral", architectures=["MistralForCausalLM"], hidden_size=4096, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, intermediate_size=14336, vocab_size=32768,
        max_position_embeddings=32768, rope_theta=1000000.0, sliding_window=None, rms_norm_eps=1e-5,
        tie_word_embeddings=False, hidden_act="silu", bos_token_id=1, eos_token_id=2,
    ),
    "mistral-7b-v0.1": dict(  # mistralai/Mistral-7B-v0.1 (sliding_window 4096 on every layer)
        model_type="mistral", architectures=["MistralForCausalLM"], hidden_size=4096, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336, vocab_size=32000,
        max_position_embeddings=32768, rope_theta=10000.0, sliding_window=4096, rms_norm_eps=1e-5,
        tie_word_embeddings=False, hidden_act="silu", bos_token_id=1, eos_token_id=2,
    ),
}
