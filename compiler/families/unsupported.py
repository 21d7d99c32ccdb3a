"""Architectures slmc refuses, and why, so `slmc check` can say more than "unknown".

The reason comes from the config itself where it can (experts, an encoder, a vision
tower); the table names well-known `model_type`s whose config alone does not say it.
"""

from __future__ import annotations

from typing import Any, Mapping

KNOWN = {
    "gpt2": "GPT-2 (learned positions, LayerNorm, Conv1D projections)",
    "gpt_neo": "GPT-Neo", "gpt_neox": "GPT-NeoX / Pythia", "gptj": "GPT-J", "opt": "OPT", "bloom": "BLOOM",
    "falcon": "Falcon", "phi": "Phi-1/Phi-2 (parallel attention and MLP, LayerNorm)", "gemma": "Gemma 1",
    "gemma2": "Gemma 2", "olmo": "OLMo", "olmo2": "OLMo 2", "stablelm": "StableLM", "starcoder2": "StarCoder2",
    "mixtral": "Mixtral (mixture of experts)", "olmoe": "OLMoE (mixture of experts)",
    "qwen2_moe": "Qwen2-MoE (mixture of experts)", "qwen3_moe": "Qwen3-MoE (mixture of experts)",
    "deepseek_v2": "DeepSeek-V2 (mixture of experts, latent attention)",
    "deepseek_v3": "DeepSeek-V3 (mixture of experts, latent attention)", "phimoe": "Phi-MoE (mixture of experts)",
    "t5": "T5 (encoder-decoder)", "bart": "BART (encoder-decoder)", "mt5": "mT5 (encoder-decoder)",
    "whisper": "Whisper (speech encoder-decoder)", "bert": "BERT (encoder only)", "roberta": "RoBERTa (encoder only)",
    "gemma3": "Gemma 3 multimodal (vision tower + text; only the text model `gemma3_text` is supported)",
    "llava": "LLaVA (vision-language)", "qwen2_vl": "Qwen2-VL (vision-language)",
    "qwen2_5_vl": "Qwen2.5-VL (vision-language)", "mllama": "Llama 3.2 Vision", "idefics3": "Idefics3 (vision-language)",
    "smolvlm": "SmolVLM (vision-language)", "mamba": "Mamba (state space, no attention)",
    "mamba2": "Mamba-2 (state space, no attention)", "rwkv": "RWKV (recurrent)",
}

_EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


def refusal(config: Mapping[str, Any]) -> str:
    """Why this (unsupported or disguised) architecture cannot be compiled, in a few words; '' if no reason is seen."""
    experts = next((k for k in _EXPERT_KEYS if isinstance(config.get(k), int) and config[k] > 1), None)
    if experts:
        return f"a mixture of experts ({experts}={config[experts]}): slmc builds dense decoders only"
    if config.get("is_encoder_decoder") is True:
        return "an encoder-decoder model: slmc builds decoder-only models"
    if isinstance(config.get("vision_config"), dict) or isinstance(config.get("audio_config"), dict):
        return "a multimodal model (it has a vision or audio tower): slmc builds text decoders"
    known = KNOWN.get(str(config.get("model_type")))
    return f"{known}: not one of the supported families" if known else ""
