"""Build the pruned model: its config, and the source's weights sliced to the kept structure.

A KV group g owns query heads g·r .. g·r + r - 1 (r = heads / kv_heads, the
order transformers' repeat_kv assumes), so keeping a group keeps those q_proj
rows (and biases), its k_proj/v_proj rows (and biases) and the matching o_proj
columns. An MLP channel is a gate/up row and a down_proj column. Biases of
o_proj/down_proj live in the hidden dimension and are kept whole.
"""

from __future__ import annotations

import copy
import re

import torch

from ..errors import ConfigError, StageError
from ..estimate import Arch
from .prune_importance import Heads, Selection

_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")
# module inside a layer -> (which index set, the weight dim it slices)
_SLICES = {
    "self_attn.q_proj": ("q", 0), "self_attn.k_proj": ("kv", 0), "self_attn.v_proj": ("kv", 0),
    "self_attn.o_proj": ("q", 1), "mlp.gate_proj": ("mlp", 0), "mlp.up_proj": ("mlp", 0),
    "mlp.down_proj": ("mlp", 1),
}


def pruned_config(hf_config: dict, arch: Arch, layers: tuple[int, ...]):
    """A transformers config: the source's with the pruned counts, head_dim explicit, per-layer lists sliced.

    transformers validates it (e.g. LlamaConfig wants heads to divide hidden_size
    even with an explicit head_dim); a refusal is a ConfigError naming
    init.prune.kv_group_ratio, with the ratios that would build.
    """
    from transformers import CONFIG_MAPPING

    try:
        return CONFIG_MAPPING[hf_config["model_type"]].from_dict(_pruned_dict(hf_config, arch, layers))
    except (ValueError, TypeError, _strict_error()) as exc:
        raise ConfigError(
            f"transformers refuses the pruned config ({arch.shapes()}): {_last_line(exc)}",
            where="init.prune.kv_group_ratio", fix=_group_fix(hf_config, arch, layers)) from None


def _pruned_dict(hf_config: dict, arch: Arch, layers: tuple[int, ...]) -> dict:
    data = copy.deepcopy(hf_config)
    data.update(num_hidden_layers=arch.num_hidden_layers, num_attention_heads=arch.num_attention_heads,
                num_key_value_heads=arch.num_key_value_heads, intermediate_size=arch.intermediate_size,
                head_dim=arch.head_dim)
    if isinstance(data.get("layer_types"), list):  # Qwen2: full/sliding attention per layer
        data["layer_types"] = [data["layer_types"][i] for i in layers]
    return data


def _strict_error() -> type[Exception]:
    """huggingface_hub's validation error (transformers' configs are strict dataclasses)."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # older huggingface_hub: validators raise ValueError
        return ValueError
    return StrictDataclassError


def _last_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[-1].strip()


def _group_fix(hf_config: dict, arch: Arch, layers: tuple[int, ...]) -> str:
    """The KV group counts this checkpoint's config class accepts, as kv_group_ratio values."""
    from transformers import CONFIG_MAPPING

    kv = int(hf_config.get("num_key_value_heads") or hf_config["num_attention_heads"])
    per_group = int(hf_config["num_attention_heads"]) // kv
    ok = []
    for groups in range(1, kv + 1):
        trial = Arch(**{**arch.__dict__, "num_key_value_heads": groups, "num_attention_heads": groups * per_group})
        try:
            CONFIG_MAPPING[hf_config["model_type"]].from_dict(_pruned_dict(hf_config, trial, layers))
            ok.append(groups)
        except (ValueError, TypeError, _strict_error()):
            continue
    ratios = ", ".join(f"{g / kv:.3g} ({g} of {kv} groups)" for g in ok)
    return f"set init.prune.kv_group_ratio to one of: {ratios}" if ok else "keep init.prune.kv_group_ratio=1.0"


def _index_sets(selection: Selection, heads: Heads, n: int) -> dict[str, torch.Tensor]:
    """Row/column indices of the kept heads and channels of the n-th kept layer."""
    q_width, hd = heads.per_group * heads.head_dim, heads.head_dim
    q = [c for g in selection.groups[n] for c in range(g * q_width, (g + 1) * q_width)]
    kv = [c for g in selection.groups[n] for c in range(g * hd, (g + 1) * hd)]
    return {"q": torch.tensor(q), "kv": torch.tensor(kv), "mlp": torch.tensor(selection.channels[n])}


def sliced_state(model, selection: Selection) -> dict[str, torch.Tensor]:
    """The source state dict, dropped layers left out, kept layers renumbered and sliced."""
    heads, new_index = Heads.of(model.config), {old: new for new, old in enumerate(selection.layers)}
    index_sets = [_index_sets(selection, heads, n) for n in range(len(selection.layers))]
    out = {}
    for name, tensor in model.state_dict().items():
        match = _LAYER_KEY.match(name)
        if not match:
            out[name] = tensor
            continue
        old, module, kind = int(match[1]), match[2], match[3]
        if old not in new_index:
            continue
        new = new_index[old]
        which, dim = _SLICES.get(module, (None, None))
        if which is not None and not (kind == "bias" and dim == 1):  # o/down biases live in the hidden dim
            tensor = tensor.index_select(dim, index_sets[new][which])
        out[f"model.layers.{new}.{module}.{kind}"] = tensor
    return out


def build_pruned(model, selection: Selection, arch: Arch):
    """A new fp32 model of the pruned config holding the kept weights (tied embeddings stay tied)."""
    from transformers import AutoModelForCausalLM

    config = pruned_config(model.config.to_dict(), arch, selection.layers)
    pruned = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    try:
        pruned.load_state_dict(sliced_state(model, selection), strict=True)
    except RuntimeError as exc:
        raise StageError(f"pruned weights do not fit the pruned config (a bug): {exc}", where="prune") from None
    if model.generation_config is not None:
        pruned.generation_config = copy.deepcopy(model.generation_config)
    return pruned.eval()
