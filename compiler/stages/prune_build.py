"""Build the pruned model: its config, and the source's weights sliced to the kept structure.

A KV group g owns query heads g·r .. g·r + r - 1 (r = heads / kv_heads, the
order transformers' repeat_kv assumes), so keeping a group keeps those q_proj
rows (and biases), its k_proj/v_proj rows (and biases) and the matching o_proj
columns. An MLP channel is a gate/up row and a down_proj column. Biases of
o_proj/down_proj live in the hidden dimension and are kept whole. Fused weights
(Phi-3) hold the same rows one block after another: qkv_proj = [q; k; v] and
gate_up_proj = [gate; up]. qk-norm weights (Qwen3, Gemma 3) are one head_dim
vector shared by every head, so they stay whole whatever heads are dropped.

The config keeps each kept layer's attention kind: `layer_types` is sliced and
written explicitly, Qwen's `max_window_layers` counts the kept full-attention
layers, and Gemma 3's `sliding_window_pattern` is kept only where it still
describes the kept layers.
"""

from __future__ import annotations

import copy
import re

import torch

from .. import families
from ..errors import ConfigError, StageError
from ..estimate import Arch
from .prune_importance import Heads, Selection

_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")
# module inside a layer -> (which index set, the weight dim it slices)
_SLICES = {
    "self_attn.q_proj": ("q", 0), "self_attn.k_proj": ("kv", 0), "self_attn.v_proj": ("kv", 0),
    "self_attn.o_proj": ("q", 1), "mlp.gate_proj": ("mlp", 0), "mlp.up_proj": ("mlp", 0),
    "mlp.down_proj": ("mlp", 1), "self_attn.qkv_proj": ("qkv", 0), "mlp.gate_up_proj": ("gate_up", 0),
}
_PATTERN_KEYS = ("sliding_window_pattern", "_sliding_window_pattern")


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
    types = source_layer_types(hf_config)
    if types is None:
        return data
    kept = [types[i] for i in layers]
    data["layer_types"] = kept
    if isinstance(hf_config.get("max_window_layers"), int):  # Qwen: layers from this index on slide
        data["max_window_layers"] = sum(i < hf_config["max_window_layers"] for i in layers)
    if any(key in hf_config for key in _PATTERN_KEYS):  # Gemma 3: every n-th layer attends fully
        pattern = _pattern_of(kept, hf_config.get("sliding_window_pattern", hf_config.get("_sliding_window_pattern")))
        data.update({key: pattern for key in _PATTERN_KEYS})
    return data


def source_layer_types(hf_config: dict) -> list[str] | None:
    """The source's attention kind per layer: config.json's `layer_types`, else what the family's
    transformers config derives (from max_window_layers or sliding_window_pattern); None for
    families whose layers are all alike. Written explicitly into the pruned config, because
    re-deriving it for fewer layers would give the kept layers other kinds."""
    if isinstance(hf_config.get("layer_types"), list):
        return list(hf_config["layer_types"])
    if families.for_config(hf_config).window != "layer_types":
        return None
    from transformers import CONFIG_MAPPING

    return list(CONFIG_MAPPING[hf_config["model_type"]].from_dict(hf_config).layer_types)


def _pattern_of(types: list[str], published) -> int | None:
    """A sliding_window_pattern n (layer i attends fully iff (i + 1) % n == 0) that gives `types`:
    the source's own n where it still does, else the one the first full layer implies, else None."""
    full = [i for i, t in enumerate(types) if t == "full_attention"]
    for n in (published, full[0] + 1 if full else len(types) + 1):
        if isinstance(n, int) and n > 0 and full == [i for i in range(len(types)) if (i + 1) % n == 0]:
            return n
    return None


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


def _index_sets(selection: Selection, heads: Heads, mlp_width: int, n: int) -> dict[str, torch.Tensor]:
    """Row/column indices of the kept heads and channels of the n-th kept layer (fused weights:
    the same indices in each block, offset by the blocks before it)."""
    q_width, hd = heads.per_group * heads.head_dim, heads.head_dim
    q = [c for g in selection.groups[n] for c in range(g * q_width, (g + 1) * q_width)]
    kv = [c for g in selection.groups[n] for c in range(g * hd, (g + 1) * hd)]
    q_rows, kv_rows = heads.num_heads * hd, heads.num_kv_heads * hd
    qkv = q + [q_rows + c for c in kv] + [q_rows + kv_rows + c for c in kv]
    mlp = list(selection.channels[n])
    return {"q": torch.tensor(q), "kv": torch.tensor(kv), "mlp": torch.tensor(mlp), "qkv": torch.tensor(qkv),
            "gate_up": torch.tensor(mlp + [mlp_width + c for c in mlp])}


def sliced_state(model, selection: Selection) -> dict[str, torch.Tensor]:
    """The source state dict, dropped layers left out, kept layers renumbered and sliced."""
    heads, new_index = Heads.of(model.config), {old: new for new, old in enumerate(selection.layers)}
    width = model.config.intermediate_size
    index_sets = [_index_sets(selection, heads, width, n) for n in range(len(selection.layers))]
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
