"""Importance scores for structured pruning: which layers, KV groups and MLP channels matter.

Two sources, same shapes, higher = keep:
- activation: calibration windows run through the model with forward hooks.
  A layer scores how much it changes the residual stream (1 - cosine between
  the block's input and output, averaged over tokens); a KV group (a KV head
  with its query heads) scores the mean L2 norm of its slice of o_proj's input;
  an MLP channel scores the mean |act(gate(x)) * up(x)| (down_proj's input).
- magnitude: weight norms standing in for the same quantities, no data needed.
Nothing here is random: ties are broken by index where the scores are used.
Families that fuse q/k/v (`qkv_proj`) or gate/up (`gate_up_proj`) are read through
`projections`, which cuts the fused weights into the split ones (the family registry
says which a family fuses).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import families
from ..families import Family

CALIBRATION_WINDOWS = 32
"""Windows of calibration text (of up to CALIBRATION_WINDOW tokens): a few thousand tokens."""
CALIBRATION_WINDOW = 128
CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class Importance:
    """Scores per layer (L,), per KV group (L, kv_heads) and per MLP channel (L, intermediate)."""

    layers: np.ndarray
    kv_groups: np.ndarray
    mlp_channels: np.ndarray
    calibration_tokens: int = 0


@dataclass(frozen=True)
class Heads:
    """How attention heads are laid out in q/k/v/o_proj."""

    num_heads: int
    num_kv_heads: int
    head_dim: int

    @property
    def per_group(self) -> int:
        return self.num_heads // self.num_kv_heads

    @classmethod
    def of(cls, config) -> "Heads":
        heads = config.num_attention_heads
        kv = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(heads, kv, head_dim)


def decoder_layers(model) -> torch.nn.ModuleList:
    return model.model.layers


def family_of(model) -> Family:
    """The registry's family of a loaded transformers model (its config's model_type)."""
    return families.for_config(model.config.to_dict())


def projections(layer, family: Family, heads: Heads) -> dict[str, torch.Tensor]:
    """The weights of one decoder layer by split name (q, k, v, o, gate, up, down): views into
    `qkv_proj` (rows: queries, keys, values) and `gate_up_proj` (rows: gate, up) where fused."""
    attn, mlp = layer.self_attn, layer.mlp
    if family.fused_qkv:
        q_rows, kv_rows = heads.num_heads * heads.head_dim, heads.num_kv_heads * heads.head_dim
        q, k, v = attn.qkv_proj.weight.split((q_rows, kv_rows, kv_rows), dim=0)
    else:
        q, k, v = attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight
    if family.fused_gate_up:
        gate, up = mlp.gate_up_proj.weight.chunk(2, dim=0)
    else:
        gate, up = mlp.gate_proj.weight, mlp.up_proj.weight
    return {"q": q, "k": k, "v": v, "o": attn.o_proj.weight, "gate": gate, "up": up, "down": mlp.down_proj.weight}


def calibration_windows(tokens: np.ndarray, max_window: int, seed: int) -> np.ndarray:
    """(n, window) token rows: every window when the text is short, else windows at seeded offsets."""
    ids = np.asarray(tokens, dtype=np.int64).reshape(-1)
    window = min(CALIBRATION_WINDOW, max_window, ids.size)
    whole = ids.size // window
    if whole <= CALIBRATION_WINDOWS:
        return ids[: whole * window].reshape(whole, window)
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.choice(ids.size - window + 1, size=CALIBRATION_WINDOWS, replace=False))
    return np.stack([ids[s : s + window] for s in starts])


# -- selection ----------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """What stays: source layer indices, and per kept layer the KV groups and MLP channels."""

    layers: tuple[int, ...]
    groups: tuple[tuple[int, ...], ...]
    channels: tuple[tuple[int, ...], ...]


def _top(scores: np.ndarray, k: int) -> tuple[int, ...]:
    """Indices of the k highest scores, in source order (ties keep the lower index)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return tuple(sorted(int(i) for i in order[:k]))


def select(importance: Importance, plan, keep_layers: list[int] | None,
           layer_types: tuple[str, ...] | None = None) -> Selection:
    """Explicit keep_layers, else the most important layers; per kept layer its best groups and channels.

    `layer_types`: the source's attention kind per layer when they differ (None when alike).
    Then each kind keeps as many layers as the plan's stand-in layers hold of it
    (`slmc.estimate.kind_quota`), the most important of that kind: the sliding/full mix
    the rule predicted is the one built.
    """
    a = plan.arch
    if keep_layers is not None:
        layers = plan.kept_layers
    elif layer_types is None:
        layers = _top(importance.layers, a.num_hidden_layers)
    else:
        layers = _top_per_kind(importance.layers, layer_types, [layer_types[i] for i in plan.kept_layers])
    groups = tuple(_top(importance.kv_groups[i], a.num_key_value_heads) for i in layers)
    channels = tuple(_top(importance.mlp_channels[i], a.intermediate_size) for i in layers)
    return Selection(tuple(layers), groups, channels)


def _top_per_kind(scores: np.ndarray, layer_types: tuple[str, ...], standins: list[str]) -> tuple[int, ...]:
    picked: list[int] = []
    for kind in dict.fromkeys(layer_types):
        members = [i for i, t in enumerate(layer_types) if t == kind]
        picked += [members[j] for j in _top(np.asarray(scores)[members], standins.count(kind))]
    return tuple(sorted(picked))


# -- activation ---------------------------------------------------------------


class _Recorder:
    """Forward hooks that sum the three statistics over every calibration token (float64)."""

    def __init__(self, model, heads: Heads):
        layers = decoder_layers(model)
        n, width = len(layers), layers[0].mlp.down_proj.in_features
        self.heads = heads
        self.change = np.zeros(n)
        self.groups = np.zeros((n, heads.num_kv_heads))
        self.channels = np.zeros((n, width))
        self.tokens = 0
        self._inputs: dict[int, torch.Tensor] = {}
        self._handles = []
        for i, layer in enumerate(layers):
            self._handles += [
                layer.register_forward_pre_hook(self._layer_in(i), with_kwargs=True),
                layer.register_forward_hook(self._layer_out(i)),
                layer.self_attn.o_proj.register_forward_pre_hook(self._attn(i)),
                layer.mlp.down_proj.register_forward_pre_hook(self._mlp(i)),
            ]

    def _layer_in(self, i):
        def hook(module, args, kwargs):
            self._inputs[i] = args[0] if args else kwargs["hidden_states"]
        return hook

    def _layer_out(self, i):
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(self._inputs.pop(i).double(), out.double(), dim=-1)
            self.change[i] += float((1.0 - cos).sum())
        return hook

    def _attn(self, i):
        def hook(module, args):
            x = args[0]
            h = self.heads
            per_group = x.reshape(*x.shape[:-1], h.num_kv_heads, h.per_group * h.head_dim)
            self.groups[i] += per_group.double().norm(dim=-1).sum(dim=(0, 1)).numpy()
        return hook

    def _mlp(self, i):
        def hook(module, args):
            self.channels[i] += args[0].double().abs().sum(dim=(0, 1)).numpy()
        return hook

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def activation_importance(model, windows: np.ndarray) -> Importance:
    """Run `windows` (n, T) through the model in batches and average the hooked statistics."""
    recorder = _Recorder(model, Heads.of(model.config))
    try:
        with torch.no_grad():
            for start in range(0, len(windows), CALIBRATION_BATCH):
                batch = torch.from_numpy(np.ascontiguousarray(windows[start : start + CALIBRATION_BATCH]))
                model(input_ids=batch, use_cache=False)
                recorder.tokens += batch.numel()
    finally:
        recorder.close()
    n = max(recorder.tokens, 1)
    return Importance(recorder.change / n, recorder.groups / n, recorder.channels / n, recorder.tokens)


# -- magnitude ----------------------------------------------------------------


def magnitude_importance(model) -> Importance:
    """Weight-norm proxies: the value path (v, o) for groups, gate·up·down for channels.

    A layer scores ||o_proj||·||v_proj|| + ||down_proj||·||up_proj|| (Frobenius):
    a bound on what the block adds to the residual stream, the gated MLP's gate taken
    as a switch. A block whose output projections are zero scores 0.
    """
    heads, family = Heads.of(model.config), family_of(model)
    layers, groups, channels = [], [], []
    with torch.no_grad():
        for layer in decoder_layers(model):
            w = {name: weight.double() for name, weight in projections(layer, family, heads).items()}
            o, v, gate, up, down = w["o"], w["v"], w["gate"], w["up"], w["down"]
            layers.append(float(o.norm() * v.norm() + down.norm() * up.norm()))
            v_rows = v.reshape(heads.num_kv_heads, heads.head_dim, -1).flatten(1).norm(dim=1)
            o_cols = o.reshape(o.shape[0], heads.num_kv_heads, -1).transpose(0, 1).flatten(1).norm(dim=1)
            groups.append((v_rows * o_cols).numpy())
            channels.append((gate.norm(dim=1) * up.norm(dim=1) * down.norm(dim=0)).numpy())
    return Importance(np.asarray(layers), np.stack(groups), np.stack(channels))
