"""What a layer's rotary embedding computes, read back from the export's arithmetic (for fuse_gqa).

GroupQueryAttention rotates inside the op, from cos/sin caches indexed by cache position,
so the GQA rule may drop the export's rotary arithmetic only once it knows exactly what that
arithmetic computes:

- the inverse frequencies and attention scale behind cos/sin (`rope_inv_freq`): transformers'
  RoPE for every scaling kind that ends in a constant `inv_freq` (default, linear, llama3,
  yarn; each layer type's own base, as Gemma 3's local and global layers have), and
  longrope's short factors while every position of the bundle stays inside
  `original_max_position_embeddings` (past it transformers switches every position to the
  long factors, which a static cache cannot follow);
- which channels rotate and what stands between the projection and the rotation
  (`rotated_heads`): full or partial rotary (Phi-3's Slice/Concat around the rotated part),
  and an optional per-head RMSNorm before it (qk-norm, Qwen3 and Gemma 3).

Anything else raises `NotFusable` with the reason; the rule then leaves that layer unfused
and the fusion report says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import _ir_utils

FUSION_DOMAIN = "ai.onnxruntime._fusion"
_LAST_AXIS = (3, -1)  # of [B, H, S, Dh] heads
_TO_END = 2**31 - 1  # a Slice end at or past this reads "to the end"


class NotFusable(ValueError):
    """This layer's attention cannot be expressed exactly by GroupQueryAttention (the message says why)."""


@dataclass(frozen=True)
class RotatedHeads:
    """One side (query or key) of an attention block, from projection to rotated heads.

    proj: the projection output [B, S, heads * head_dim] (what GQA reads when `norm` is None);
    norm: the per-head SimplifiedLayerNormalization between projection and rotation (qk-norm);
    rotary: the fusion-domain RotaryEmbedding node (its inputs 1, 2 are cos and sin).
    """

    proj: ir.Value
    norm: ir.Node | None
    rotary: ir.Node
    heads: int
    head_dim: int
    rotary_dim: int

    @property
    def cos(self) -> ir.Value:
        return self.rotary.inputs[1]

    @property
    def sin(self) -> ir.Value:
        return self.rotary.inputs[2]

    @property
    def interleaved(self) -> int:
        return self.rotary.attributes.get_int("interleaved", 0)


def _producer(value: ir.Value | None, op_type: str, domain: str = "") -> ir.Node | None:
    node = value.producer() if value is not None else None
    if node is None or node.op_type != op_type or node.domain != domain:
        return None
    return node


def _ints(value: ir.Value | None) -> list[int] | None:
    array = _ir_utils.get_numpy_value(value) if value is not None else None
    return None if array is None else [int(x) for x in np.asarray(array).reshape(-1)]


def _last_axis_slice(node: ir.Node | None) -> tuple[ir.Value, int, int] | None:
    """(data, start, end) of a Slice along the last axis with step 1, or None."""
    if node is None or len(node.inputs) < 4:
        return None
    starts, ends, axes = (_ints(v) for v in node.inputs[1:4])
    steps = _ints(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] is not None else [1]
    if not (starts and ends and axes and len(starts) == len(ends) == len(axes) == 1 and steps == [1]):
        return None
    data = node.inputs[0]
    rank = data.shape.rank() if data.shape is not None else None
    if axes[0] != -1 and (rank is None or axes[0] != rank - 1):
        return None
    return data, starts[0], ends[0]


def _qk_norm(value: ir.Value, head_dim: int | None) -> tuple[ir.Node | None, ir.Value]:
    """(norm node, its input) if `value` is a per-head RMSNorm over the last axis, else (None, value)."""
    node = _producer(value, "SimplifiedLayerNormalization")
    if node is None or node.attributes.get_int("axis", -1) not in _LAST_AXIS:
        return None, value
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    if weight is None or weight.const_value is None or weight.const_value.size != head_dim:
        return None, value
    return node, node.inputs[0]


def rotated_heads(value: ir.Value) -> RotatedHeads:
    """Parse `value` = rotary(optional norm(heads of a projection)); NotFusable otherwise.

    Accepted forms ([B, S, H, Dh] is the projection reshaped into heads, T its transpose):
    RotaryEmbedding(T), and partial rotary Concat(RotaryEmbedding(T[..., :r]), T[..., r:]);
    T may carry an RMSNorm over Dh before or after the Transpose (qk-norm).
    """
    node = value.producer()
    if node is not None and node.op_type == "Concat" and node.domain == "" and len(node.inputs) == 2:
        rotary = _producer(node.inputs[0], "RotaryEmbedding", FUSION_DOMAIN)
        rotated = _last_axis_slice(_producer(rotary.inputs[0], "Slice")) if rotary else None
        passed = _last_axis_slice(_producer(node.inputs[1], "Slice"))
        if rotated is None or passed is None or rotated[0] is not passed[0]:
            raise NotFusable("query/key is a concatenation that is not partial rotary")
        data, start, end = rotated
        to_end = passed[2] >= _TO_END or passed[2] == _ir_utils.get_dim(data, 3)
        if start != 0 or passed[1] != end or not to_end:
            raise NotFusable("partial rotary slices do not split the head into rotated + passed channels")
        heads_value, rotary_dim = data, end
    else:
        rotary = _producer(value, "RotaryEmbedding", FUSION_DOMAIN)
        if rotary is None:
            raise NotFusable("query/key does not come from a rotary embedding")
        heads_value, rotary_dim = rotary.inputs[0], None
    head_dim = _ir_utils.get_dim(heads_value, 3)
    if not isinstance(head_dim, int):
        raise NotFusable("head size unknown")
    norm, before = _qk_norm(heads_value, head_dim)
    transpose = _producer(before, "Transpose")
    if transpose is None or list(transpose.attributes.get_ints("perm", [])) != [0, 2, 1, 3]:
        raise NotFusable("heads are not a [B, S, H, Dh] -> [B, H, S, Dh] transpose of a projection")
    shaped = transpose.inputs[0]
    if norm is None:
        norm, shaped = _qk_norm(shaped, head_dim)
    reshape = _producer(shaped, "Reshape")
    heads = _ir_utils.get_dim(shaped, 2)
    if reshape is None or not isinstance(heads, int) or _ir_utils.get_dim(shaped, 3) != head_dim:
        raise NotFusable("heads are not a reshape of a projection")
    rotary_dim = head_dim if rotary_dim is None else min(rotary_dim, head_dim)
    return RotatedHeads(reshape.inputs[0], norm, rotary, heads, head_dim, rotary_dim)


def rope_inv_freq(cos: ir.Value, sin: ir.Value, max_positions: int | None = None) -> tuple[np.ndarray, float]:
    """(inv_freq, attention scale) behind the cos/sin fed to RotaryEmbedding; NotFusable otherwise.

    Accepts transformers' `cos = cat(freqs, freqs).cos() * scaling` with
    `freqs = position_ids[..., None].float() * inv_freq` (Mul) or
    `(inv_freq[None, :, None] @ position_ids[:, None, :].float()).transpose(1, 2)`
    (MatMul + Transpose), the 4-D cos/sin being an Unsqueeze(axis 1) of that. `inv_freq`
    may be longrope's switch between long and short factors (see `_longrope_short`), which
    needs `max_positions`.
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
                raise NotFusable("cos/sin are scaled by something other than a constant")
            scale, value = float(factor), next(v for v in mul.inputs if v.const_value is None)
        node = _producer(value, trig)
        cat = _producer(node.inputs[0] if node is not None else None, "Concat")
        if cat is None or len(cat.inputs) != 2 or cat.inputs[0] is not cat.inputs[1]:
            raise NotFusable("cos/sin are not cat(freqs, freqs) of rotary frequencies")
        found.append((_freqs_inv_freq(cat.inputs[0], max_positions), scale))
    (inv_cos, scale_cos), (inv_sin, scale_sin) = found
    if not (np.array_equal(inv_cos, inv_sin) and scale_cos == scale_sin):
        raise NotFusable("cos and sin use different frequencies")
    return inv_cos, scale_cos


def _freqs_inv_freq(freqs: ir.Value, max_positions: int | None) -> np.ndarray:
    """inv_freq (1-D) if `freqs` = position_ids (as float, [B, S, 1]) times inv_freq."""
    node = freqs.producer()
    if node is not None and node.op_type == "Transpose":
        node = _producer(node.inputs[0], "MatMul")
    if node is None or node.op_type not in ("Mul", "MatMul"):
        raise NotFusable("rotary frequencies are not position_ids times inv_freq")
    positions = [v for v in node.inputs if _reads_position_ids(v)]
    others = [v for v in node.inputs if not _reads_position_ids(v)]
    if len(positions) != 1 or len(others) != 1:
        raise NotFusable("rotary angles are not computed from position_ids")
    (inv_freq,) = others
    if inv_freq.const_value is None:
        inv_freq = _longrope_short(inv_freq, max_positions)
    return np.asarray(inv_freq.const_value.numpy()).reshape(-1)


def _longrope_short(value: ir.Value, max_positions: int | None) -> ir.Value:
    """Longrope's `where(max(position_ids) + 1 > original_max, long, short)`: the short factors,
    provided no position of the bundle reaches past original_max (NotFusable otherwise)."""
    where = _producer(value, "Where")
    greater = _producer(where.inputs[0], "Greater") if where is not None else None
    if where is None or greater is None or any(v.const_value is None for v in where.inputs[1:]):
        raise NotFusable("inv_freq is computed at run time (dynamic RoPE scaling)")
    add = _producer(greater.inputs[0], "Add")
    limit = _ir_utils.get_singleton_value(greater.inputs[1])
    one = next((v for v in add.inputs if _ir_utils.is_singleton_value(v, 1)), None) if add is not None else None
    reduce = next((_producer(v, "ReduceMax") for v in add.inputs if v is not one), None) if one is not None else None
    if reduce is None or limit is None or not _reads_position_ids(reduce.inputs[0]):
        raise NotFusable("inv_freq switches on a condition that is not longrope's sequence length")
    if max_positions is None or max_positions > limit:
        raise NotFusable(
            f"longrope switches to its long factors past {int(limit)} positions, which a static rotary "
            f"cache cannot follow; fuse with max_seq_len <= {int(limit)} (export.max_seq_len)")
    return where.inputs[2]


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
