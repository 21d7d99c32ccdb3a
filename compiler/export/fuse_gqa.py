"""Rewrite rule: one exported attention block -> com.microsoft GroupQueryAttention.

It runs after onnxscript's own ORT fusions have turned the rotate-half
arithmetic into `RotaryEmbedding` and the softmax(QK^T)V arithmetic into `SDPA`
(both temporary ops of the `ai.onnxruntime._fusion` domain). What is left of a
transformers Llama-style attention then reads:

    q/k/v = Transpose(Reshape(proj_out))            # [B, S, H*Dh] -> [B, H, S, Dh]
    q, k  = RotaryEmbedding(q|k, cos, sin)
    present.i.key   = Concat(past_key_values.i.key,   k, axis=-2)
    present.i.value = Concat(past_key_values.i.value, v, axis=-2)
    out = Reshape(Transpose(SDPA(q, repeat_kv(present.i.key), repeat_kv(present.i.value), mask)))

What differs per family is read from the graph by fuse_rope (qk-norm before or after the
transpose, partial rotary, the RoPE frequencies of each layer, longrope) and by the SDPA
fusion (the query scale, e.g. Gemma 3's query_pre_attn_scalar); each layer's sliding
window comes from the graph's metadata (export.attention) and becomes GQA's
`local_window_size` over the full cache. A layer the rule cannot express exactly is left
unfused, with the reason in `GqaFusion.failures`.

onnxscript's own GQA rule expects an older mask pattern and derives the cache
length from position_ids, which is wrong for left-padded rows; this rule keeps
the bundle contract instead (see `GqaInputs`): every row's cache holds
`total_sequence` positions (= attention_mask's length), padding is masked by an
additive attention bias from attention_mask, and rotary positions are cache
indices. RoPE only sees position differences, so for every unpadded position
this equals HF's `position_ids = cumsum(mask) - 1`; `position_ids` is then no
longer read by the graph (ORT GenAI's builder does the same).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import _ir_utils, pattern

from slmc.runtime.session import TOKEN_INPUTS

from .fuse_rope import FUSION_DOMAIN, NotFusable, RotatedHeads, rope_inv_freq, rotated_heads

MS_DOMAIN = "com.microsoft"
#: graph inputs a causal + padding mask may be computed from (shapes of the KV inputs included)
_MASK_SOURCES = TOKEN_INPUTS


@dataclass
class GqaInputs:
    """Graph-wide GQA inputs, built once from `attention_mask` and `input_ids`.

    seqlens_k [B] int32 = total - 1 for every row (left padding stays in the cache),
    total_sequence_length int32 scalar, query_seqlens [B] int32 = S (lets ORT take
    several new tokens with a past for any batch size), attention_bias [B, 1, S, T]
    float (0 where attention_mask is 1, float32 min where it is 0).
    """

    seqlens_k: ir.Value
    total_sequence_length: ir.Value
    query_seqlens: ir.Value
    attention_bias: ir.Value


def _const(name: str, array: np.ndarray) -> ir.Value:
    return ir.Value(name=name, const_value=ir.tensor(array, name=name))


def add_gqa_inputs(graph: ir.Graph) -> GqaInputs:
    """Append the nodes computing `GqaInputs` at the start of `graph` (unused ones are removed later)."""
    inputs = {v.name: v for v in graph.inputs}
    mask, ids = inputs["attention_mask"], inputs["input_ids"]
    prefix, taken = "slmc_gqa", {v.name for n in graph for v in n.outputs} | set(graph.initializers)
    while any(name.startswith(prefix + "_") for name in taken):  # a graph fused before
        prefix += "x"
    consts = {
        "one": np.array([1], np.int64),
        "axes12": np.array([1, 2], np.int64),
        "ones2": np.array([1, 1], np.int64),
        "zero_f": np.array(0.0, np.float32),
        "min_f": np.array(np.finfo(np.float32).min, np.float32),
    }
    values = {key: _const(f"{prefix}_{key}", array) for key, array in consts.items()}
    for value in values.values():
        graph.register_initializer(value)
    nodes: list[ir.Node] = []

    def add(op_type: str, args: list[ir.Value], name: str, **attributes) -> ir.Value:
        name = name.replace("slmc_gqa", prefix, 1)
        node = ir.node(op_type, args, attributes=attributes, name=name, num_outputs=1)
        node.outputs[0].name = name
        nodes.append(node)
        return node.outputs[0]

    total_1d = add("Shape", [mask], "slmc_gqa_total", start=1, end=2)
    batch_1d = add("Shape", [mask], "slmc_gqa_batch", start=0, end=1)
    seq_1d = add("Shape", [ids], "slmc_gqa_seq", start=1, end=2)
    last = add("Sub", [total_1d, values["one"]], "slmc_gqa_last")
    last32 = add("Cast", [last], "slmc_gqa_last_i32", to=ir.DataType.INT32)
    seqlens_k = add("Expand", [last32, batch_1d], "slmc_gqa_seqlens_k")
    total32 = add("Cast", [add("Squeeze", [total_1d], "slmc_gqa_total_0d")], "slmc_gqa_total_i32",
                  to=ir.DataType.INT32)
    seq32 = add("Cast", [seq_1d], "slmc_gqa_seq_i32", to=ir.DataType.INT32)
    query_seqlens = add("Expand", [seq32, batch_1d], "slmc_gqa_query_seqlens")
    keep = add("Cast", [mask], "slmc_gqa_keep", to=ir.DataType.BOOL)
    bias_2d = add("Where", [keep, values["zero_f"], values["min_f"]], "slmc_gqa_bias_2d")
    bias_4d = add("Unsqueeze", [bias_2d, values["axes12"]], "slmc_gqa_bias_b11t")
    shape = add("Concat", [values["ones2"], seq_1d, values["one"]], "slmc_gqa_bias_shape",
                axis=0)
    bias = add("Expand", [bias_4d, shape], "slmc_gqa_attention_bias")
    first = next(iter(graph), None)
    if first is None:
        graph.extend(nodes)
    else:
        graph.insert_before(first, nodes)  # they read graph inputs only
    return GqaInputs(seqlens_k, total32, query_seqlens, bias)


def _repeat_kv(op, kv):
    """transformers' repeat_kv: [B, Hkv, T, Dh] -> Unsqueeze(2) -> Expand -> Reshape [B, H, T, Dh]."""
    return op.Reshape(op.Expand(op.Unsqueeze(kv, [2]), pattern.ANY_VALUE), pattern.ANY_VALUE)


def graph_inputs_behind(value: ir.Value, limit: int = 400) -> set[str] | None:
    """Names of graph inputs `value` is computed from (None when the walk exceeds `limit` nodes)."""
    seen: set[int] = set()
    stack, found = [value], set()
    while stack:
        current = stack.pop()
        node = current.producer()
        if node is None:
            if current.const_value is None and not current.is_initializer():
                found.add(current.name)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        if len(seen) > limit:
            return None
        if node.op_type == "Shape":  # shapes of anything are fine: they carry no values
            continue
        stack.extend(v for v in node.inputs if v is not None)
    return found


class GqaFusion(pattern.RewriteRuleClassBase):
    """The attention block of one layer -> GroupQueryAttention with cache, rotary and mask inside.

    windows: per layer, the sliding window (tokens a query sees, itself included) or None;
    a sliding layer's mask is replaced by GQA's `local_window_size`, so the window must come
    from the model's config (export.attention), never be guessed from the graph. failures:
    shared dict the rule fills with layer -> why its structurally matching block was not fused.
    """

    def __init__(self, shared: GqaInputs, *, max_positions: int, repeat_kv: bool,
                 windows: Sequence[int | None] = (), failures: dict[int, str] | None = None):
        # One rule per K/V form (repeated for GQA, as is when heads == kv heads): an OrValue
        # over both trips onnxscript's matcher, which then binds one node twice.
        super().__init__("SlmcGroupQueryAttention" + ("" if repeat_kv else "NoRepeat"), remove_nodes=False)
        self._shared, self._max_positions, self._repeat = shared, max_positions, repeat_kv
        self._windows = tuple(windows)
        self.failures = failures if failures is not None else {}
        self._caches: dict[bytes, tuple[ir.Value, ir.Value]] = {}

    def pattern(self, op, q_rot, k_rot, v_proj, past_key, past_value, mask):
        v = op.Transpose(op.Reshape(v_proj, pattern.ANY_VALUE), perm=[0, 2, 1, 3])
        present_key = op.Concat(past_key, k_rot, _outputs=["present_key"])
        present_value = op.Concat(past_value, v, _outputs=["present_value"])
        key = _repeat_kv(op, present_key) if self._repeat else present_key
        value = _repeat_kv(op, present_value) if self._repeat else present_value
        attn = op.SDPA(q_rot, key, value, mask, key_format="BHSd", _domain=FUSION_DOMAIN, _outputs=["attn"])
        # Phi-3 reshapes the attention output to its own shape first
        heads = pattern.OrValue([op.Reshape(attn, pattern.ANY_VALUE), attn])
        out = op.Reshape(op.Transpose(heads, perm=[0, 2, 1, 3]), pattern.ANY_VALUE)
        return out, present_key, present_value

    def check(self, context, q_rot, k_rot, past_key, past_value, mask, present_key, present_value, attn,
              **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        for past, present in ((past_key, present_key), (past_value, present_value)):
            if past.producer() is not None or not (past.name or "").startswith("past_key_values."):
                return result.fail("past K/V is not a past_key_values.* graph input", past)
            if not present.is_graph_output():
                return result.fail("present K/V is not a graph output", present)
            if present.producer().attributes.get_int("axis", 0) not in (2, -2):
                return result.fail("K/V concatenated along another axis", present)
        layer = _layer_of(past_key)
        try:
            self._check_layer(layer, q_rot, k_rot, past_key, mask, attn)
        except NotFusable as exc:
            self.failures[layer] = str(exc)
            return result.fail(str(exc), [q_rot, k_rot])
        self.failures.pop(layer, None)
        return result

    def _check_layer(self, layer: int, q_rot, k_rot, past_key, mask, attn) -> None:
        """Record what the rewrite needs about this layer; NotFusable says why it cannot be fused."""
        q, k = rotated_heads(q_rot), rotated_heads(k_rot)
        head_dim = _ir_utils.get_dim(past_key, 3)
        if not (isinstance(head_dim, int) and q.head_dim == k.head_dim == head_dim):
            raise NotFusable("query, key and cache head sizes differ or are unknown")
        if q.interleaved != k.interleaved or q.rotary_dim != k.rotary_dim:
            raise NotFusable("query and key rotate differently")
        if q.cos is not k.cos or q.sin is not k.sin:
            raise NotFusable("query and key use different cos/sin")
        inv_freq, scale = rope_inv_freq(q.cos, q.sin, self._max_positions)
        if 2 * inv_freq.size != q.rotary_dim:
            raise NotFusable(f"{2 * inv_freq.size} rotary frequencies for {q.rotary_dim} rotated channels")
        if inv_freq.size % 8:
            # ORT's kernels rotate in blocks: cos_cache width (rotated channels / 2) must be a multiple of 8
            raise NotFusable(f"GroupQueryAttention needs the rotated channels per head ({q.rotary_dim}) to be a "
                             "multiple of 16")
        sources = graph_inputs_behind(mask)
        if sources is None or "attention_mask" not in sources or not all(
                s in _MASK_SOURCES or s.startswith("past_key_values.") for s in sources):
            raise NotFusable(f"the attention mask is not computed from attention_mask alone ({sources})")
        sdpa_scale = attn.producer().attributes.get_float("scale", None)
        window = self._windows[layer] if 0 <= layer < len(self._windows) else None
        self._q, self._k, self._rope = q, k, (inv_freq, scale)
        self._scale = 1.0 / math.sqrt(head_dim) if sdpa_scale is None else sdpa_scale
        # both count the query itself: transformers attends to kv > q - window, GQA to the
        # last local_window_size positions (checked by graph parity with prompts past the window)
        self._local_window = -1 if window is None else int(window)

    def _rope_caches(self, op) -> tuple[ir.Value, ir.Value]:
        inv_freq, scale = self._rope
        key = inv_freq.tobytes() + np.float64(scale).tobytes()
        if key not in self._caches:
            # the export's arithmetic: float32 position * float32 inv_freq, then cos/sin of that angle
            positions = np.arange(self._max_positions, dtype=np.float32)[:, None]
            angles = (positions * inv_freq.astype(np.float32)[None, :]).astype(np.float64)
            index = len(self._caches)
            cos = op.initializer(ir.tensor((np.cos(angles).astype(np.float32) * np.float32(scale))),
                                 name=f"slmc_rope_cos_cache_{index}")
            sin = op.initializer(ir.tensor((np.sin(angles).astype(np.float32) * np.float32(scale))),
                                 name=f"slmc_rope_sin_cache_{index}")
            self._caches[key] = (cos, sin)
        return self._caches[key]

    @staticmethod
    def _gqa_input(op, side: RotatedHeads) -> ir.Value:
        """What GQA reads for one side: the projection, or with qk-norm the projection normed per
        head ([B, S, H*Dh] -> [B, S, H, Dh] -> RMSNorm over Dh -> back), ahead of GQA's rotary."""
        if side.norm is None:
            return side.proj
        heads = op.Reshape(side.proj, op.Constant(value_ints=[0, 0, side.heads, side.head_dim]))
        attrs = side.norm.attributes
        normed = op.SimplifiedLayerNormalization(
            heads, side.norm.inputs[1], axis=-1, epsilon=attrs.get_float("epsilon", 1e-5),
            stash_type=attrs.get_int("stash_type", 1))
        return op.Reshape(normed, op.Constant(value_ints=[0, 0, side.heads * side.head_dim]))

    def rewrite(self, op, v_proj, past_key, past_value, **_):
        cos_cache, sin_cache = self._rope_caches(op)
        s = self._shared
        return op.GroupQueryAttention(
            self._gqa_input(op, self._q), self._gqa_input(op, self._k), v_proj, past_key, past_value,
            s.seqlens_k, s.total_sequence_length, cos_cache, sin_cache, None, s.attention_bias, None, None, None,
            None, None, s.query_seqlens,
            num_heads=self._q.heads, kv_num_heads=self._k.heads, do_rotary=1,
            rotary_interleaved=self._q.interleaved, scale=float(self._scale),
            local_window_size=self._local_window, _domain=MS_DOMAIN, _outputs=3)


def _layer_of(past_key: ir.Value) -> int:
    """The layer index in a `past_key_values.{layer}.key` name (-1 if it has none)."""
    parts = (past_key.name or "").split(".")
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else -1
