"""Offline ONNX Runtime graph optimization of an exported decoder.

Why offline: a bundle should ship the graph it was measured with, and a
session then loads it faster. Levels:

- basic / extended: ORT's own graph optimizer (`SessionOptions.optimized_model_filepath`:
  constant folding, redundant-node elimination, op fusions) at that level.
- all: slmc.export.fuse first (onnxscript's ORT fusions plus slmc's
  GroupQueryAttention rule: RMSNorm -> (Skip)SimplifiedLayerNormalization,
  rotary + KV cache + attention -> GroupQueryAttention, Q/K/V projections packed),
  then ORT at EXTENDED. The bundle I/O is unchanged; see fuse.py for what the
  fused graph does differently (position_ids unread, shareable KV buffer).

Every level is one pipeline of passes over the model in memory (export.passes), whose
post-conditions are the unchanged bundle I/O and logit parity with the input
(export.graph_parity's cases, at every level). Why fusing pays, in numbers:
bench/results/notes.md.

The saved graph is optimized at `ORT_ENABLE_EXTENDED` at most: ORT warns that
a model serialized at `ORT_ENABLE_ALL` may hold hardware-specific layout
transforms (the NCHWc transformer) and "should only be used in the same
environment the model was optimized in". A bundle is built on one machine and
run on another; the ALL-only rewrites are applied again by the runtime's
session at load time.

The result contains `com.microsoft` ops: it is for ONNX Runtime only, never for
TensorRT (see trt_ops.prepare_for_tensorrt for that route). fp16 graphs are
refused: the CPU provider would save CPU-only Cast nodes into them.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import onnx_ir as ir

from slmc.errors import StageError

from .fuse import FIX as FUSE_FIX
from .fuse import OrtFusions
from .onnx_files import EXTERNAL_TENSOR_MIN_BYTES, load_model, op_histogram, ort_source, save_model
from .passes import DecoderPipeline
from .tie import ShareTiedEmbedding

Level = Literal["basic", "extended", "all"]

_ORT_LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_EXTENDED"}


@dataclass(frozen=True)
class OptimizeReport:
    """What optimize_for_ort did, for the stage metrics and the run report."""

    level: str
    ort_level: str
    transformer_fusions: dict[str, int]
    nodes_before: int
    nodes_after: int
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    external_data: bool
    max_abs_logit_diff: float | None = None
    notes: list[str] = field(default_factory=list)
    kv_share_buffer: bool = False
    parity: dict[str, float] | None = None


class OrtOfflineOptimization(ir.passes.FunctionalPass):
    """ONNX Runtime's own graph optimizer at `ort_level`, as a pass.

    The one step of the pipeline that leaves memory: ORT reads a model from bytes but
    writes its optimized graph only to a file (`SessionOptions.optimized_model_filepath`),
    so the result is read back from a temporary folder. ORT does not carry model metadata
    (slmc.kv_share_buffer) into that file; the pass copies it over.
    """

    def __init__(self, ort_level: str):
        self.ort_level = ort_level

    def requires(self, model: ir.Model) -> None:
        if any(v.dtype == ir.DataType.FLOAT16 for v in model.graph.inputs):
            # Optimizing on the CPU EP inserts fp16<->fp32 Casts around every op that has no
            # fp16 CPU kernel and saves them into the graph.
            raise StageError("an fp16 graph cannot be optimized offline on the CPU execution provider: "
                             "ORT would save CPU-only Cast nodes into it", where="export.optimize",
                             fix="skip offline optimization for fp16 bundles; the GPU session optimizes at load")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, self.ort_level)
        options.log_severity_level = 3
        with tempfile.TemporaryDirectory(prefix="slmc-ort-") as tmp:
            out = Path(tmp) / "optimized.onnx"
            options.optimized_model_filepath = str(out)
            # external initializers: a model past protobuf's 2 GiB could not be written otherwise
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                             out.name + ".data")
            options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                             str(EXTERNAL_TENSOR_MIN_BYTES))
            ort.InferenceSession(ort_source(model, Path(tmp)), options, providers=["CPUExecutionProvider"])
            result = load_model(out)
        for key, value in model.metadata_props.items():
            result.metadata_props.setdefault(key, value)
        return ir.passes.PassResult(result, modified=True)


def optimize_for_ort(onnx_in: Path, onnx_out: Path, *, num_heads: int, hidden_size: int,
                     level: Level = "all", external_data: bool | None = None,
                     check: bool = True, model_info: dict | None = None,
                     max_seq_len: int | None = None) -> OptimizeReport:
    """Optimize an exported decoder for ONNX Runtime and save it at `onnx_out`.

    basic / extended: ORT's offline optimizer at that level. all: slmc.export.fuse
    first, then ORT at EXTENDED (see the module docstring). `model_info` is the
    export's model summary; `max_seq_len` (export.max_seq_len) sizes the fused rotary
    caches, which otherwise cover max_position_embeddings (fuse.DEFAULT_MAX_POSITIONS
    without model_info). A tied embedding stays one table (export.tie) at every level.
    num_heads / hidden_size are kept for callers; the fusions read head counts from the
    graph. `external_data=None` decides from the weight size. With `check`, the result's
    logits are compared with the input's (export.graph_parity) and a difference past the
    tolerance is a StageError.
    """
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    if level not in _ORT_LEVELS:
        raise StageError(f"unknown optimization level {level!r}", where="export.optimize.level",
                         fix=f"use one of {sorted(_ORT_LEVELS)}")
    model = load_model(onnx_in)
    offline = OrtOfflineOptimization(_ORT_LEVELS[level])
    offline.requires(model)  # refuse fp16 before any fusion runs
    before = op_histogram(model)
    fusions = OrtFusions.for_model(model, model_info, max_seq_len=max_seq_len) if level == "all" else None
    tie = ShareTiedEmbedding()
    pipeline = DecoderPipeline(
        [fusions, tie, offline] if fusions else [tie, offline], where="export.optimize",
        fix=FUSE_FIX if fusions else "report this with the model's config.json",
        reference=onnx_in if check else None,
        parity_options={"max_positions": fusions.max_positions} if fusions else {})
    model = pipeline.run(model)
    external = save_model(model, onnx_out, external=external_data)
    notes = ["saved at ORT_ENABLE_EXTENDED at most; ORT_ENABLE_ALL rewrites can be hardware-specific "
             "and are applied by the session at load time"] + (fusions.notes if fusions else [])
    if tie.shared:
        notes.append("tied embedding stored once: the output layer reads the embedding table (FusedMatMul, transB=1)")
    after = op_histogram(model)
    return OptimizeReport(
        level=level, ort_level=_ORT_LEVELS[level], transformer_fusions=fusions.fusions if fusions else {},
        nodes_before=sum(before.values()), nodes_after=sum(after.values()), ops_before=before, ops_after=after,
        external_data=external, max_abs_logit_diff=pipeline.parity.unpadded if pipeline.parity else None,
        notes=notes, kv_share_buffer=bool(fusions and fusions.kv_share_buffer),
        parity=pipeline.parity.diffs if pipeline.parity else None,
    )
