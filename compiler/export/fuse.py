"""Fuse an exported decoder into ONNX Runtime's transformer ops, keeping the bundle I/O.

Why: the dynamo export is ~260 standard ops per token on a 4-layer model; ORT
GenAI's builder graph is ~50 (docs/architecture.md), and most of the difference is the
attention. This pass rewrites the export (fp32, or already quantized to
MatMulNBits / MatMulInteger) into the builder's op set:

- onnxscript's ORT fusions (the library made for dynamo exports):
  RMSNorm -> SimplifiedLayerNormalization, residual + RMSNorm ->
  SkipSimplifiedLayerNormalization, rotate-half -> RotaryEmbedding, and
  softmax(QK^T)V -> SDPA;
- slmc's rule (fuse_gqa) turning each layer's rotary + KV concat + SDPA into one
  com.microsoft GroupQueryAttention, with the cache length, rotary caches and
  padding bias computed inside the graph from attention_mask;
- Q/K/V projections packed into one MatMul / MatMulNBits (fuse_pack).

Names, dtypes and shapes of inputs and outputs stay as docs/bundle-format.md says, so the
numpy loop runs the fused graph unchanged. Two documented differences:
`position_ids` is no longer read (rotary positions are cache indices, the same
logits for every unpadded position), and present K/V of left-padding positions
hold other (masked, never read) values.

The result may also share one KV buffer between past and present
(GroupQueryAttention's past_present_share_buffer): when every present output
comes from GroupQueryAttention, the model's metadata says
`slmc.kv_share_buffer = 1` and the runtime then binds one preallocated buffer
per layer as both past_key_values.i.* and present.i.* (slmc.runtime.stepper).

Every fused op has a CPU execution provider kernel; the result is for ONNX
Runtime only, never for TensorRT.

Quantize after fusing when the target is ORT int4: ORT's offline optimizer then
has folded a tied lm_head's Transpose into a constant, which MatMulNBits can
quantize (quantized first, that MatMul keeps a non-constant weight and stays
fp32: -15% decode speed on the 1.3M model).

Measured against ORT GenAI's builder + generator on the same checkpoints (2-core
shared CPU, 1 thread, batch 1, 128-token prompt, 128 new tokens, tokens per
CPU-second, interleaved): slmc runtime on the fused graph 0.87-0.90x (1.3M),
0.90-0.92x (35.7M); GenAI's own generator on slmc's fused graph 0.93-0.97x, so
the rest is per-token Python in the runtime loop (~5 us) and the few nodes
computing the padding bias and cache lengths from attention_mask, which the
builder's graph does not have (it takes right-padded rows and no position_ids).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from slmc.errors import StageError

from .fuse_check import CheckResult, check_fused
from .fuse_gqa import FUSION_DOMAIN, MS_DOMAIN, GqaFusion, add_gqa_inputs
from .fuse_pack import pack_qkv

#: model metadata key the runtime reads to enable the shared KV buffer loop
SHARE_BUFFER_KEY = "slmc.kv_share_buffer"
#: rotary cache rows when the model's max_position_embeddings is not given
DEFAULT_MAX_POSITIONS = 4096
EXTERNAL_DATA_THRESHOLD = 100 * 1024 * 1024
_QUANTIZED_OPS = ("MatMulNBits", "MatMulInteger", "DynamicQuantizeLinear", "GatherBlockQuantized")


@dataclass(frozen=True)
class FuseReport:
    """What fuse_for_ort did: fusions applied (by fused op), graph size, parity of the result."""

    fusions: dict[str, int]
    attention_layers: int
    num_layers: int
    kv_share_buffer: bool
    nodes_before: int
    nodes_after: int
    ops_after: dict[str, int]
    max_positions: int
    external_data: bool
    parity: dict[str, float] | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def op_counts(graph: ir.Graph) -> dict[str, int]:
    """Node count per op type; ops outside the default domain read `domain::Op`."""
    counts = Counter(f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in graph)
    return dict(sorted(counts.items()))


def _onnxscript_fusions(model: ir.Model) -> dict[str, int]:
    """onnxscript's pre-optimization and the ORT fusions slmc's GQA rule builds on."""
    from onnxscript import optimizer
    from onnxscript.rewriter.ort_fusions import shape_optimization
    from onnxscript.rewriter.ort_fusions.rms_normalization import fuse_rms_normalization
    from onnxscript.rewriter.ort_fusions.rotary_embedding import fuse_rotary_embedding
    from onnxscript.rewriter.ort_fusions.sdpa import fuse_sdpa
    from onnxscript.rewriter.ort_fusions.skip_normalization import fuse_skip_rms_normalization

    # the same preparation as onnxscript.rewriter.ort_fusions.optimize_for_ort
    common_passes.ShapeInferencePass()(model)
    optimizer.optimize(model)
    shape_optimization.rules.apply_to_model(model)
    optimizer.optimize(model)
    rms = fuse_rms_normalization(model)
    skip = fuse_skip_rms_normalization(model)
    return {
        "SimplifiedLayerNormalization": rms - skip,
        "SkipSimplifiedLayerNormalization": skip,
        "RotaryEmbedding": fuse_rotary_embedding(model),
        "SDPA": fuse_sdpa(model, apply_shape_inference=True),
    }


def _fuse_attention(model: ir.Model, max_positions: int) -> int:
    from onnxscript.rewriter import pattern

    shared = add_gqa_inputs(model.graph)
    rules = pattern.RewriteRuleSet(
        [GqaFusion.rule(shared, max_positions=max_positions, repeat_kv=r) for r in (True, False)])
    return rules.apply_to_model(model)


def _finish(model: ir.Model) -> int:
    """Lower what no fusion took back to runnable ops; returns SDPA nodes turned into MultiHeadAttention."""
    from onnxscript import optimizer
    from onnxscript.rewriter.ort_fusions.sdpa_via_mha import replace_sdpa_by_mha

    common_passes.RemoveUnusedNodesPass()(model)
    leftover = replace_sdpa_by_mha(model)
    optimizer.optimize(model)  # also inlines RotaryEmbedding functions no rule consumed
    common_passes.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1)(model)
    common_passes.RemoveUnusedNodesPass()(model)
    common_passes.RemoveUnusedOpsetsPass()(model)
    _drop_unused_outputs(model.graph)
    left = [n for n in model.graph.all_nodes() if n.domain == FUSION_DOMAIN]
    if left:
        raise StageError(f"fusion left {len(left)} placeholder op(s) ({left[0].op_type}) with no ORT kernel",
                         where="export.fuse", fix="report this with the model's config.json")
    return leftover


def _drop_unused_outputs(graph: ir.Graph) -> int:
    """Unname optional outputs nobody reads (onnxscript's norm fusions request the mean and
    inverse std); ORT then neither allocates nor writes them. Returns how many."""
    dropped = 0
    for node in graph:
        if node.op_type not in ("SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"):
            continue
        for value in node.outputs[1:3]:
            if value.name and not value.uses() and not value.is_graph_output():
                value.name = ""
                dropped += 1
    return dropped


def _shares_buffer(model: ir.Model, num_layers: int) -> bool:
    presents = [v for v in model.graph.outputs if (v.name or "").startswith("present.")]
    return len(presents) == 2 * num_layers and all(
        (p := v.producer()) is not None and p.op_type == "GroupQueryAttention" and p.domain == MS_DOMAIN
        for v in presents)


def _kv_dtype(model: ir.Model) -> ir.DataType | None:
    past = next((v for v in model.graph.inputs if (v.name or "").startswith("past_key_values.")), None)
    return past.dtype if past is not None else None


def fuse_for_ort(onnx_in: Path, onnx_out: Path, *, model_info: Mapping[str, Any] | None = None,
                 pack: bool = True, check: bool = True, external_data: bool | None = None) -> FuseReport:
    """Write the fused graph of `onnx_in` to `onnx_out` and describe it (see the module docstring).

    model_info: the export's model summary (num_hidden_layers, max_position_embeddings);
    read from the graph when missing. pack: pack Q/K/V projections. check: compare
    the result's logits with the input's (prefill, decode with a past, a left-padded
    batch, and the shared-buffer loop) and raise StageError past the tolerance.
    """
    start = time.perf_counter()
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    model = ir.load(onnx_in)
    ir.external_data.load_to_model(model)  # own the weights: onnx_out may sit beside onnx_in
    quantized = any(n.op_type in _QUANTIZED_OPS for n in model.graph)
    if _kv_dtype(model) not in (None, ir.DataType.FLOAT):
        raise StageError(f"fusion expects a float32 KV cache, the graph has {_kv_dtype(model)}",
                         where="export.fuse", fix="fuse before casting to fp16, or skip fusion for fp16 bundles")
    info = dict(model_info or {})
    layers = int(info.get("num_hidden_layers") or sum(
        1 for v in model.graph.inputs if (v.name or "").endswith(".key") and v.name.startswith("past_key_values.")))
    max_positions = int(info.get("max_position_embeddings") or DEFAULT_MAX_POSITIONS)
    nodes_before = len(model.graph)
    fusions = _onnxscript_fusions(model)
    fusions["GroupQueryAttention"] = _fuse_attention(model, max_positions)
    fusions["PackedQKV"] = pack_qkv(model.graph) if pack else 0
    fusions["MultiHeadAttention"] = _finish(model)
    shares = _shares_buffer(model, layers)
    notes = []
    if fusions["GroupQueryAttention"] == 0:
        notes.append("attention was not fused (the export's attention pattern was not recognised)")
    if shares:
        model.metadata_props[SHARE_BUFFER_KEY] = "1"
        notes.append("position_ids is not read: rotary positions are KV cache indices")
    external = _save(model, onnx_out, external_data)
    dynamic_int8 = any(n.op_type == "DynamicQuantizeLinear" for n in model.graph)
    parity = _check(onnx_in, onnx_out, shares, quantized, dynamic_int8, max_positions) if check else None
    return FuseReport(
        fusions={k: v for k, v in fusions.items() if v}, attention_layers=fusions["GroupQueryAttention"],
        num_layers=layers, kv_share_buffer=shares, nodes_before=nodes_before, nodes_after=len(model.graph),
        ops_after=op_counts(model.graph), max_positions=max_positions, external_data=external,
        parity=parity, seconds=round(time.perf_counter() - start, 3), notes=notes)


def _save(model: ir.Model, onnx_out: Path, external_data: bool | None) -> bool:
    """Save with model.onnx.data when asked or when the weights pass ~100 MB; returns which."""
    weights = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
    external = weights > EXTERNAL_DATA_THRESHOLD if external_data is None else external_data
    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    data = onnx_out.with_name(onnx_out.name + ".data")
    data.unlink(missing_ok=True)
    if external:
        ir.save(model, onnx_out, external_data=data.name)
        data.chmod(onnx_out.stat().st_mode & 0o777)  # written 0600; a bundle must stay readable
    else:
        ir.save(model, onnx_out)
    return external


def _check(onnx_in: Path, onnx_out: Path, shares: bool, quantized: bool, dynamic_int8: bool,
           max_positions: int) -> dict[str, float]:
    result: CheckResult = check_fused(onnx_in, onnx_out, shared_buffer=shares, quantized=quantized,
                                      dynamic_int8=dynamic_int8, max_positions=max_positions)
    if not result.ok:
        raise StageError(f"the fused graph's logits differ from the export's: {result.describe()}",
                         where="export.fuse", fix="report this with the model's config.json; "
                         "optimize at level 'extended' to skip the fusions")
    return result.diffs
