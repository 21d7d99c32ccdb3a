"""Fuse an exported decoder into ONNX Runtime's transformer ops, keeping the bundle I/O.

Why: the dynamo export is several times more standard ops per token than the graph
ORT GenAI's builder writes, and most of the difference is the attention (node counts
and speeds: bench/results/notes.md). These passes rewrite the export (fp32, or already
quantized to MatMulNBits / MatMulInteger) into the builder's op set:

- onnxscript's ORT fusions (the library made for dynamo exports):
  RMSNorm -> SimplifiedLayerNormalization, residual + RMSNorm ->
  SkipSimplifiedLayerNormalization, rotate-half -> RotaryEmbedding, and
  softmax(QK^T)V -> SDPA;
- slmc's rule (fuse_gqa) turning each layer's rotary + KV concat + SDPA into one
  com.microsoft GroupQueryAttention, with the cache length, rotary caches and
  padding bias computed inside the graph from attention_mask;
- Q/K/V projections packed into one MatMul / MatMulNBits (fuse_pack), or a checkpoint's
  own fused qkv projection fed to GQA as is (Phi-3).

Every supported family fuses (qk-norm, partial rotary, sliding windows, per-layer RoPE
bases, query_pre_attn_scalar, longrope within original_max_position_embeddings: see
fuse_gqa / fuse_rope). A layer GroupQueryAttention cannot compute exactly keeps its own
attention (lowered to MultiHeadAttention with its mask), the KV buffer is then not
shared, and `FuseReport.notes` names the layers and the reason. The rotary caches hold
`max_seq_len` positions (the bundle's export.max_seq_len), or max_position_embeddings
when it is not given.

Names, dtypes and shapes of inputs and outputs stay as docs/bundle-format.md says
(a post-condition of every pass, export.passes), so every runtime loop runs the fused
graph unchanged. Two documented differences: `position_ids` is no longer read (rotary
positions are cache indices, the same logits for every unpadded position), and present
K/V of left-padding positions hold other (masked, never read) values.

The result may also share one KV buffer between past and present
(GroupQueryAttention's past_present_share_buffer): when every present output
comes from GroupQueryAttention, the model's metadata says
`slmc.kv_share_buffer = 1` and the runtime then binds one preallocated buffer
per layer as both past_key_values.i.* and present.i.* (slmc.runtime.stepper).

Every fused op has a CPU execution provider kernel; the result is for ONNX
Runtime only, never for TensorRT.

Quantize after fusing when the target is ORT int4: a tied lm_head is quantized in
either order (export.quantize gives it its own weight first), but only a graph fused
to share its KV buffer already needs an onnxruntime recent enough for the int4 table
to be stored once (export.tie).

What still separates slmc's runtime on the fused graph from ORT GenAI's generator is
per-token Python in the runtime loop and the few nodes computing the padding bias and
cache lengths from attention_mask, which the builder's graph does not have (it takes
right-padded rows and no position_ids).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from slmc.errors import StageError
from slmc.runtime.session import SHARE_BUFFER_KEY

from .attention import read_layer_windows
from .fuse_gqa import FUSION_DOMAIN, MS_DOMAIN, GqaFusion, add_gqa_inputs
from .fuse_pack import pack_qkv
from .io_spec import PRESENT_KEY
from .onnx_files import load_model, op_histogram, save_model
from .passes import DecoderPipeline

#: rotary cache rows when the model's max_position_embeddings is not given
DEFAULT_MAX_POSITIONS = 4096
FIX = "report this with the model's config.json; optimize at level 'extended' to skip the fusions"


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


class OnnxscriptFusions(ir.passes.InPlacePass):
    """onnxscript's pre-optimization and the ORT fusions slmc's GQA rule builds on."""

    def __init__(self):
        self.counts: dict[str, int] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
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
        self.counts = {
            "SimplifiedLayerNormalization": rms - skip,
            "SkipSimplifiedLayerNormalization": skip,
            "RotaryEmbedding": fuse_rotary_embedding(model),
            "SDPA": fuse_sdpa(model, apply_shape_inference=True),
        }
        return ir.passes.PassResult(model, modified=True)  # the optimizer alone folds constants


class GroupQueryAttentionFusion(ir.passes.InPlacePass):
    """slmc's rule (fuse_gqa): rotary + KV concat + SDPA of a layer -> GroupQueryAttention.

    Each layer's sliding window comes from the graph's metadata (export.attention). After a
    run, `count` is the number of layers fused and `failures` says, per layer whose block
    matched structurally but could not be fused exactly, why not.
    """

    def __init__(self, max_positions: int):
        self.max_positions, self.count = max_positions, 0
        self.failures: dict[int, str] = {}
        self.windows: list[int | None] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnxscript.rewriter import pattern

        self.windows = read_layer_windows(model)
        shared = add_gqa_inputs(model.graph)
        rules = pattern.RewriteRuleSet([
            GqaFusion.rule(shared, max_positions=self.max_positions, repeat_kv=r, windows=self.windows,
                           failures=self.failures) for r in (True, False)])
        self.count = rules.apply_to_model(model)
        return ir.passes.PassResult(model, modified=True)  # the shared GQA inputs are added either way


class PackQkvProjections(ir.passes.InPlacePass):
    """Each GroupQueryAttention's Q/K/V projections as one matrix product (fuse_pack)."""

    def __init__(self):
        self.count = 0

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.count = pack_qkv(model.graph)
        return ir.passes.PassResult(model, modified=self.count > 0)


class LowerUnfused(ir.passes.InPlacePass):
    """Lower what no fusion took back to runnable ops; `count`: SDPA nodes turned into MultiHeadAttention."""

    def __init__(self):
        self.count = 0

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnxscript import optimizer
        from onnxscript.rewriter.ort_fusions.sdpa_via_mha import replace_sdpa_by_mha

        common_passes.RemoveUnusedNodesPass()(model)
        self.count = replace_sdpa_by_mha(model)
        optimizer.optimize(model)  # also inlines RotaryEmbedding functions no rule consumed
        common_passes.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1)(model)
        common_passes.RemoveUnusedNodesPass()(model)
        common_passes.RemoveUnusedOpsetsPass()(model)
        _drop_unused_outputs(model.graph)
        return ir.passes.PassResult(model, modified=True)

    def ensures(self, model: ir.Model) -> None:
        left = [n for n in model.graph.all_nodes() if n.domain == FUSION_DOMAIN]
        if left:
            raise StageError(f"fusion left {len(left)} placeholder op(s) ({left[0].op_type}) with no ORT kernel",
                             where="export.fuse", fix="report this with the model's config.json")


def _present_from_gqa(graph: ir.Graph, layer: int) -> bool:
    """Whether layer `layer`'s present key comes from a GroupQueryAttention node."""
    name = PRESENT_KEY.format(layer=layer)
    value = next((v for v in graph.outputs if v.name == name), None)
    node = value.producer() if value is not None else None
    return node is not None and node.op_type == "GroupQueryAttention" and node.domain == MS_DOMAIN


def _ranges(layers: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    spans: list[list[int]] = []
    for layer in layers:
        if spans and layer == spans[-1][1] + 1:
            spans[-1][1] = layer
        else:
            spans.append([layer, layer])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


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


class MarkSharedKvBuffer(ir.passes.InPlacePass):
    """Set `slmc.kv_share_buffer = 1` when every present output comes from GroupQueryAttention."""

    def __init__(self, num_layers: int):
        self.num_layers, self.shares = num_layers, False

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        presents = [v for v in model.graph.outputs if (v.name or "").startswith("present.")]
        self.shares = len(presents) == 2 * self.num_layers and all(
            (p := v.producer()) is not None and p.op_type == "GroupQueryAttention" and p.domain == MS_DOMAIN
            for v in presents)
        if self.shares:
            model.metadata_props[SHARE_BUFFER_KEY] = "1"
        return ir.passes.PassResult(model, modified=self.shares)


class OrtFusions(ir.passes.Sequential):
    """slmc's fusions for ONNX Runtime, in order (module docstring); after a run, `fusions`,
    `kv_share_buffer` and `notes` say what they did."""

    def __init__(self, *, num_layers: int, max_positions: int, pack: bool = True):
        self.num_layers, self.max_positions = num_layers, max_positions
        self.unfused_layers: list[int] = []
        self.onnxscript, self.attention = OnnxscriptFusions(), GroupQueryAttentionFusion(max_positions)
        self.pack = PackQkvProjections() if pack else None
        self.lower, self.mark = LowerUnfused(), MarkSharedKvBuffer(num_layers)
        passes = (self.onnxscript, self.attention, self.pack, self.lower, self.mark)
        super().__init__(*(p for p in passes if p is not None))

    @classmethod
    def for_model(cls, model: ir.Model, model_info: Mapping[str, Any] | None, pack: bool = True,
                  max_seq_len: int | None = None) -> OrtFusions:
        """Sized from the export's model summary (num_hidden_layers, max_position_embeddings),
        or from the graph where it is missing. `max_seq_len` (the bundle's export.max_seq_len)
        sizes the rotary caches; without it they cover max_position_embeddings."""
        info = dict(model_info or {})
        layers = int(info.get("num_hidden_layers") or sum(
            1 for v in model.graph.inputs if (v.name or "").startswith("past_key_values.") and v.name.endswith(".key")))
        positions = max_seq_len or int(info.get("max_position_embeddings") or DEFAULT_MAX_POSITIONS)
        return cls(num_layers=layers, max_positions=int(positions), pack=pack)

    def ensures(self, model: ir.Model) -> None:
        self.unfused_layers = [i for i in range(self.num_layers) if not _present_from_gqa(model.graph, i)]

    def requires(self, model: ir.Model) -> None:
        past = next((v for v in model.graph.inputs if (v.name or "").startswith("past_key_values.")), None)
        if past is not None and past.dtype != ir.DataType.FLOAT:
            raise StageError(f"fusion expects a float32 KV cache, the graph has {past.dtype}", where="export.fuse",
                             fix="fuse before casting to fp16, or skip fusion for fp16 bundles")

    @property
    def fusions(self) -> dict[str, int]:
        counts = {**self.onnxscript.counts, "GroupQueryAttention": self.attention.count,
                  "PackedQKV": self.pack.count if self.pack else 0, "MultiHeadAttention": self.lower.count}
        return {k: v for k, v in counts.items() if v}

    @property
    def kv_share_buffer(self) -> bool:
        return self.mark.shares

    @property
    def notes(self) -> list[str]:
        notes = []
        if self.unfused_layers:
            reasons: dict[str, list[int]] = {}
            for layer in self.unfused_layers:
                why = self.attention.failures.get(layer, "the export's attention pattern was not recognised")
                reasons.setdefault(why, []).append(layer)
            fused = self.num_layers - len(self.unfused_layers)
            notes.append(f"attention was not fused in {len(self.unfused_layers)} of {self.num_layers} layers "
                         f"({fused} fused); they keep the exact unfused attention, and the KV buffer is not shared: "
                         + "; ".join(f"layers {_ranges(layers)}: {why}" for why, layers in reasons.items()))
        elif self.attention.count == 0:
            notes.append("attention was not fused: every layer already uses GroupQueryAttention")
        if self.attention.windows and self.attention.count:
            notes.append("sliding-window layers use GroupQueryAttention's local_window_size over the full cache")
        if self.mark.shares:
            notes.append("position_ids is not read: rotary positions are KV cache indices")
        return notes


def fuse_for_ort(onnx_in: Path, onnx_out: Path, *, model_info: Mapping[str, Any] | None = None,
                 pack: bool = True, check: bool = True, external_data: bool | None = None,
                 max_seq_len: int | None = None) -> FuseReport:
    """Write the fused graph of `onnx_in` to `onnx_out` and describe it (see the module docstring).

    model_info: the export's model summary (num_hidden_layers, max_position_embeddings);
    read from the graph when missing. max_seq_len: the longest sequence the bundle serves
    (export.max_seq_len), which sizes the rotary caches; None keeps max_position_embeddings.
    pack: pack Q/K/V projections. check: compare the result's logits with the input's
    (export.graph_parity's cases, the shared-buffer loop included) and raise StageError past
    the tolerance.
    """
    start = time.perf_counter()
    model = load_model(onnx_in)  # weights in memory: onnx_out may replace onnx_in
    fusions = OrtFusions.for_model(model, model_info, pack=pack, max_seq_len=max_seq_len)
    nodes_before = len(model.graph)
    pipeline = DecoderPipeline([fusions], where="export.fuse", fix=FIX, reference=onnx_in if check else None,
                               parity_options={"max_positions": fusions.max_positions})
    model = pipeline.run(model)
    external = save_model(model, onnx_out, external=external_data)
    return FuseReport(
        fusions=fusions.fusions, attention_layers=fusions.attention.count, num_layers=fusions.num_layers,
        kv_share_buffer=fusions.kv_share_buffer, nodes_before=nodes_before, nodes_after=len(model.graph),
        ops_after=op_histogram(model), max_positions=fusions.max_positions, external_data=external,
        parity=pipeline.parity.diffs if pipeline.parity else None,
        seconds=round(time.perf_counter() - start, 3), notes=fusions.notes)
