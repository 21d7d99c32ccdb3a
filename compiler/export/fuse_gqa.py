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
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import _ir_utils, pattern

from slmc.runtime.session import TOKEN_INPUTS

FUSION_DOMAIN = "ai.onnxruntime._fusion"
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


def _producer(value: ir.Value | None, op_type: str, domain: str = "") -> ir.Node | None:
    node = value.producer() if value is not None else None
    if node is None or node.op_type != op_type or node.domain != domain:
        return None
    return node


def rope_inv_freq(cos: ir.Value, sin: ir.Value) -> tuple[np.ndarray, float] | None:
    """(inv_freq, attention scale) behind the cos/sin fed to RotaryEmbedding, or None.

    Accepts transformers' `cos = cat(freqs, freqs).cos() * scaling` with
    `freqs = position_ids[..., None].float() * inv_freq` (Mul) or
    `(inv_freq[None, :, None] @ position_ids[:, None, :].float()).transpose(1, 2)`
    (MatMul + Transpose), the 4-D cos/sin being an Unsqueeze(axis 1) of that.
    """
    found = []
    for value, trig in ((cos, "Cos"), (sin, "Sin")):
        node = _producer(value, "Unsqueeze")
        value = node.inputs[0] if node is not None else None
        scale = 1.0
        mul = _producer(value, "Mul")
        if mul is not None:
            factor = next((_ir_utils.get_singleton_value(v) for v in mul.inputs if v.const_value is not None), None)
            if factor is None:
                return None
            scale, value = float(factor), next(v for v in mul.inputs if v.const_value is None)
        node = _producer(value, trig)
        cat = _producer(node.inputs[0] if node is not None else None, "Concat")
        if cat is None or len(cat.inputs) != 2 or cat.inputs[0] is not cat.inputs[1]:
            return None
        inv_freq = _freqs_inv_freq(cat.inputs[0])
        if inv_freq is None:
            return None
        found.append((inv_freq, scale))
    (inv_cos, scale_cos), (inv_sin, scale_sin) = found
    if not (np.array_equal(inv_cos, inv_sin) and scale_cos == scale_sin):
        return None
    return inv_cos, scale_cos


def _freqs_inv_freq(freqs: ir.Value) -> np.ndarray | None:
    """inv_freq (1-D) if `freqs` = position_ids (as float, [B, S, 1]) times a constant inv_freq."""
    node = freqs.producer()
    if node is not None and node.op_type == "Transpose":
        node = _producer(node.inputs[0], "MatMul")
    if node is None or node.op_type not in ("Mul", "MatMul"):
        return None
    const = [v for v in node.inputs if v.const_value is not None]
    other = [v for v in node.inputs if v.const_value is None]
    if len(const) != 1 or len(other) != 1 or not _reads_position_ids(other[0]):
        return None
    return np.asarray(const[0].const_value.numpy()).reshape(-1)


def _reads_position_ids(value: ir.Value) -> bool:
    """value = Cast/Unsqueeze/Expand/Reshape chain of the graph input `position_ids`."""
    for _ in range(6):
        if value.name == "position_ids" and value.producer() is None:
            return True
        node = value.producer()
        if node is None or node.op_type not in ("Cast", "Unsqueeze", "Expand", "Reshape"):
            return False
        value = node.inputs[0]
    return False


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
    """The attention block of one layer -> GroupQueryAttention with cache, rotary and mask inside."""

    def __init__(self, shared: GqaInputs, *, max_positions: int, repeat_kv: bool):
        # One rule per K/V form (repeated for GQA, as is when heads == kv heads): an OrValue
        # over both trips onnxscript's matcher, which then binds one node twice.
        super().__init__("SlmcGroupQueryAttention" + ("" if repeat_kv else "NoRepeat"), remove_nodes=False)
        self._shared, self._max_positions, self._repeat = shared, max_positions, repeat_kv
        self._caches: dict[bytes, tuple[ir.Value, ir.Value]] = {}

    def pattern(self, op, q_proj, k_proj, v_proj, past_key, past_value, cos, sin, mask):
        q = op.Transpose(op.Reshape(q_proj, pattern.ANY_VALUE), perm=[0, 2, 1, 3])
        k = op.Transpose(op.Reshape(k_proj, pattern.ANY_VALUE), perm=[0, 2, 1, 3])
        v = op.Transpose(op.Reshape(v_proj, pattern.ANY_VALUE), perm=[0, 2, 1, 3])
        q_rot = op.RotaryEmbedding(q, cos, sin, _domain=FUSION_DOMAIN, _outputs=["q_rot"])
        k_rot = op.RotaryEmbedding(k, cos, sin, _domain=FUSION_DOMAIN, _outputs=["k_rot"])
        present_key = op.Concat(past_key, k_rot, _outputs=["present_key"])
        present_value = op.Concat(past_value, v, _outputs=["present_value"])
        key = _repeat_kv(op, present_key) if self._repeat else present_key
        value = _repeat_kv(op, present_value) if self._repeat else present_value
        attn = op.SDPA(q_rot, key, value, mask, key_format="BHSd", _domain=FUSION_DOMAIN, _outputs=["attn"])
        out = op.Reshape(op.Transpose(attn, perm=[0, 2, 1, 3]), pattern.ANY_VALUE)
        return out, present_key, present_value

    def check(self, context, past_key, past_value, cos, sin, mask, q_rot, k_rot, present_key,
              present_value, attn, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        for past, present in ((past_key, present_key), (past_value, present_value)):
            if past.producer() is not None or not (past.name or "").startswith("past_key_values."):
                return result.fail("past K/V is not a past_key_values.* graph input", past)
            if not present.is_graph_output():
                return result.fail("present K/V is not a graph output", present)
            if present.producer().attributes.get_int("axis", 0) not in (2, -2):
                return result.fail("K/V concatenated along another axis", present)
        q_attrs, k_attrs = q_rot.producer().attributes, k_rot.producer().attributes
        self._heads = q_attrs.get_int("num_heads", 0)
        self._kv_heads = k_attrs.get_int("num_heads", 0)
        self._interleaved = q_attrs.get_int("interleaved", 0)
        head_dim = _ir_utils.get_dim(past_key, 3)
        if not (self._heads and self._kv_heads and isinstance(head_dim, int)):
            return result.fail("head counts or head size unknown", [q_rot, k_rot])
        if self._interleaved != k_attrs.get_int("interleaved", 0):
            return result.fail("q and k rotate differently", [q_rot, k_rot])
        rope = rope_inv_freq(cos, sin)
        if rope is None or 2 * rope[0].size != head_dim:
            return result.fail("cos/sin are not full-width RoPE of position_ids", [cos, sin])
        self._rope = rope
        scale = attn.producer().attributes.get_float("scale", None)
        self._scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
        sources = graph_inputs_behind(mask)
        if sources is None or "attention_mask" not in sources or not all(
                s in _MASK_SOURCES or s.startswith("past_key_values.") for s in sources):
            return result.fail(f"mask is not computed from attention_mask alone ({sources})", mask)
        return result

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

    def rewrite(self, op, q_proj, k_proj, v_proj, past_key, past_value, **_):
        cos_cache, sin_cache = self._rope_caches(op)
        s = self._shared
        return op.GroupQueryAttention(
            q_proj, k_proj, v_proj, past_key, past_value, s.seqlens_k, s.total_sequence_length,
            cos_cache, sin_cache, None, s.attention_bias, None, None, None, None, None, s.query_seqlens,
            num_heads=self._heads, kv_num_heads=self._kv_heads, do_rotary=1,
            rotary_interleaved=self._interleaved, scale=float(self._scale),
            _domain=MS_DOMAIN, _outputs=3)
