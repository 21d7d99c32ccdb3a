"""genai_config.json for the bundle, so onnxruntime-genai loads the folder as is.

The keys follow what onnxruntime-genai's own model builder writes
(`onnxruntime_genai/models/builders/base.py: make_genai_config`). Two things
differ because our graph is a dynamo export, fused or not, not the builder's: the
decoder inputs also name `position_ids`, and `past_present_share_buffer` is false
(present = concat(past, new), a fresh buffer each step) unless the package stage
finds a graph fused to share its KV buffers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from slmc.errors import ConfigError
from slmc.export.io_spec import PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE
from slmc.runtime.session import TOKEN_INPUTS

# Model types onnxruntime-genai runs as a plain decoder-only graph (each family's own
# `genai_type` among them; onnxruntime-genai 0.18 loads every one).
GENAI_DECODER_TYPES = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma3_text", "granite", "olmo", "smollm3", "phi", "phi3"}
)
PROVIDERS = ("cpu", "cuda")

_SEARCH_DEFAULTS: dict[str, Any] = {
    "do_sample": False,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "repetition_penalty": 1.0,
}


def _per_layer(template: str) -> str:
    """The bundle format's `{layer}` placeholder in genai's printf form."""
    return template.replace("{layer}", "%d")


def _decoder_names(io: Mapping[str, list]) -> tuple[dict[str, str], dict[str, str]]:
    input_names = {entry["name"] for entry in io["inputs"]}
    output_names = {entry["name"] for entry in io["outputs"]}
    missing = [n for n in (*TOKEN_INPUTS, PAST_KEY.format(layer=0)) if n not in input_names]
    missing += [n for n in ("logits", PRESENT_KEY.format(layer=0)) if n not in output_names]
    if missing:
        raise ConfigError(
            f"the decoder graph lacks {missing}, which genai_config.json must name",
            where="export.io",
            fix="export with slmc.export.export_decoder so the graph follows docs/bundle-format.md",
        )
    inputs = {name: name for name in TOKEN_INPUTS}
    inputs["past_key_names"] = _per_layer(PAST_KEY)
    inputs["past_value_names"] = _per_layer(PAST_VALUE)
    outputs = {
        "logits": "logits",
        "present_key_names": _per_layer(PRESENT_KEY),
        "present_value_names": _per_layer(PRESENT_VALUE),
    }
    return inputs, outputs


def genai_type(architecture: str) -> str:
    """genai_config's `model.type` for an architecture: the family's GenAI type (the architecture
    may be a family name or a config.json model_type), a decoder type GenAI knows, else llama
    (the graph is a plain decoder with a KV cache either way)."""
    from slmc import families

    family = families.FAMILIES.get(architecture) or families.for_model_type(architecture)
    if family is not None:
        return family.genai_type
    return architecture if architecture in GENAI_DECODER_TYPES else "llama"


def _search(max_seq_len: int, generation: Mapping[str, Any] | None) -> dict[str, Any]:
    settings = {**_SEARCH_DEFAULTS, **{k: v for k, v in (generation or {}).items() if k in _SEARCH_DEFAULTS}}
    return {
        "diversity_penalty": 0.0,
        "do_sample": bool(settings["do_sample"]),
        "early_stopping": True,
        "length_penalty": 1.0,
        "max_length": int(max_seq_len),
        "min_length": 0,
        "no_repeat_ngram_size": 0,
        "num_beams": 1,
        "num_return_sequences": 1,
        "past_present_share_buffer": False,
        "repetition_penalty": float(settings["repetition_penalty"]),
        "temperature": float(settings["temperature"]),
        "top_k": int(settings["top_k"]),
        "top_p": float(settings["top_p"]),
    }


def _session_options(provider: str) -> dict[str, Any]:
    if provider not in PROVIDERS:
        raise ConfigError(
            f"no genai_config provider {provider!r}; available: {', '.join(PROVIDERS)}",
            where="device.runtime",
            fix="TensorRT bundles are run by build_engine + the runtime, not onnxruntime-genai",
        )
    options = [] if provider == "cpu" else [{provider: {}}]
    return {"log_id": "onnxruntime-genai", "provider_options": options}


def genai_config(
    *,
    model: Mapping[str, Any],
    io: Mapping[str, list],
    eos_token_ids: Sequence[int] | int,
    bos_token_id: int | None,
    pad_token_id: int,
    max_seq_len: int,
    generation: Mapping[str, Any] | None = None,
    provider: str = "cpu",
    filename: str = "model.onnx",
) -> dict[str, Any]:
    """The genai_config.json dict for a bundle (`model` and `io` as in the manifest).

    `generation` may carry do_sample, temperature, top_k, top_p, repetition_penalty
    (the manifest's generation block); other keys are not genai search options.
    """
    eos = [int(eos_token_ids)] if isinstance(eos_token_ids, int) else [int(t) for t in eos_token_ids]
    arch = str(model["architecture"])
    inputs, outputs = _decoder_names(io)
    return {
        "model": {
            "bos_token_id": None if bos_token_id is None else int(bos_token_id),
            "context_length": int(max_seq_len),
            "decoder": {
                "session_options": _session_options(provider),
                "filename": filename,
                "head_size": int(model["head_dim"]),
                "hidden_size": int(model["hidden_size"]),
                "inputs": inputs,
                "outputs": outputs,
                "num_attention_heads": int(model["num_attention_heads"]),
                "num_hidden_layers": int(model["num_hidden_layers"]),
                "num_key_value_heads": int(model["num_key_value_heads"]),
            },
            "eos_token_id": eos[0] if len(eos) == 1 else eos,
            "pad_token_id": int(pad_token_id),
            "type": genai_type(arch),
            "vocab_size": int(model["vocab_size"]),
        },
        "search": _search(max_seq_len, generation),
    }
