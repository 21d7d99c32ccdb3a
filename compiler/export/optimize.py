"""Offline ONNX Runtime graph optimization of an exported decoder, saved to disk.

Why offline: a bundle should ship the graph it was measured with, and a
session then loads it faster. Levels:

- basic / extended: ORT's own graph optimizer (`SessionOptions.optimized_model_filepath`:
  constant folding, redundant-node elimination, op fusions) at that level.
- all: slmc.export.fuse first (onnxscript's ORT fusions plus slmc's
  GroupQueryAttention rule: RMSNorm -> (Skip)SimplifiedLayerNormalization,
  rotary + KV cache + attention -> GroupQueryAttention, Q/K/V projections packed),
  then ORT at EXTENDED. The bundle I/O is unchanged; see fuse.py for what the
  fused graph does differently (position_ids unread, shareable KV buffer).

The saved graph is optimized at `ORT_ENABLE_EXTENDED` at most: ORT warns that
a model serialized at `ORT_ENABLE_ALL` may hold hardware-specific layout
transforms (the NCHWc transformer) and "should only be used in the same
environment the model was optimized in". A bundle is built on one machine and
run on another; the ALL-only rewrites are applied again by the runtime's
session at load time.

The result contains `com.microsoft` ops: it is for ONNX Runtime only, never for
TensorRT (see trt_ops.prepare_for_tensorrt for that route). fp16 graphs are
refused: the CPU provider would save CPU-only Cast nodes into them.

Measured (2-core CPU shared with other jobs, load 6-9; batch 1, 128-token prompt,
128 new tokens, 1 intra-op thread, decode tokens/s per CPU-second, interleaved runs,
slmc runtime with its shared-buffer loop): level "all" vs the previous "all" recipe
(onnxruntime.transformers RMSNorm fusion only): 1.3M Llama fp32 2.0x, int4 2.5x;
35.7M fp32 1.3x, int4 1.65x; ORT GenAI's builder + generator stays ~5-10% ahead
(see the fuse module). Logits stay within 1e-5 on fp32 graphs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import onnx

from slmc.errors import StageError

from .fuse import FuseReport, fuse_for_ort
from .fuse_check import UNPADDED_CASES, check_fused

Level = Literal["basic", "extended", "all"]

#: Models whose weights exceed this are saved with external data (model.onnx.data).
EXTERNAL_DATA_THRESHOLD = 100 * 1024 * 1024

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


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type; ops outside the default domain read `domain::Op`."""
    counts = Counter(f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
                     for n in model.graph.node)
    return dict(sorted(counts.items()))


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of all initializers, inline or external (from their declared shapes)."""
    total = 0
    for init in model.graph.initializer:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
        total += int(np.prod(init.dims, dtype=np.int64)) * itemsize
    return total


def needs_external_data(model: onnx.ModelProto, threshold: int = EXTERNAL_DATA_THRESHOLD) -> bool:
    return weight_bytes(model) > threshold


def data_file(onnx_path: Path) -> Path:
    """The external-data file next to a model: `model.onnx` -> `model.onnx.data`."""
    return onnx_path.with_name(onnx_path.name + ".data")


def save_onnx(model: onnx.ModelProto, path: Path, *, external: bool | None = None) -> bool:
    """Save `model`, with external data when asked or when it is large; returns whether it did.

    `model` must hold its weights (loaded with external data). onnx appends to an
    existing external-data file, so a stale one is removed first, and it strips the
    weights out of the proto it saves, so it saves a copy.
    """
    path = Path(path)
    external = needs_external_data(model) if external is None else external
    data = data_file(path)
    if data.exists():
        data.unlink()
    if external:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        onnx.save_model(copy, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
        match_mode(data, path)
    else:
        onnx.save_model(model, str(path))
    return external


def match_mode(data: Path, model: Path) -> None:
    """Give an external-data file the model file's permissions (onnx writes it 0600, which
    a bundle copied to another user or device could not read)."""
    if data.exists():
        data.chmod(model.stat().st_mode & 0o777)


def copy_onnx(onnx_in: Path, onnx_out: Path) -> None:
    """Copy a model and its external-data file (if any), keeping the data file's name relative."""
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    model = onnx.load(str(onnx_in), load_external_data=False)
    locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    if not locations:
        shutil.copyfile(onnx_in, onnx_out)
        return
    save_onnx(onnx.load(str(onnx_in)), onnx_out, external=True)


def _fuse(onnx_in: Path, fused_path: Path, model_info, external: bool) -> FuseReport:
    try:
        return fuse_for_ort(onnx_in, fused_path, model_info=model_info, check=False, external_data=external)
    except StageError:
        raise
    except Exception as exc:  # a rewrite rule tripping on an unexpected pattern
        raise StageError(f"ONNX Runtime fusions failed on {onnx_in.name}: {type(exc).__name__}: {exc}",
                         where="export.optimize",
                         fix="use optimization level 'extended' (ORT's optimizer only)") from exc


def _keep_metadata(fused_path: Path, onnx_out: Path) -> None:
    """Copy model metadata (e.g. slmc.kv_share_buffer) the ORT optimizer may not write back."""
    wanted = {p.key: p.value for p in onnx.load(str(fused_path), load_external_data=False).metadata_props}
    model = onnx.load(str(onnx_out), load_external_data=False)
    have = {p.key: p.value for p in model.metadata_props}
    if all(have.get(k) == v for k, v in wanted.items()):
        return
    onnx.helper.set_model_props(model, {**have, **wanted})
    onnx.save_model(model, str(onnx_out))  # the graph only: external data stays where it is


def _ort_offline(model_path: Path, onnx_out: Path, ort_level: str, external: bool) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ort_level)
    options.optimized_model_filepath = str(onnx_out)
    if external:
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", data_file(onnx_out).name)
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    if data_file(onnx_out).exists():
        data_file(onnx_out).unlink()
    ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    match_mode(data_file(onnx_out), onnx_out)


def optimize_for_ort(onnx_in: Path, onnx_out: Path, *, num_heads: int, hidden_size: int,
                     level: Level = "all", external_data: bool | None = None,
                     check: bool = True, model_info: dict | None = None) -> OptimizeReport:
    """Optimize an exported decoder for ONNX Runtime and save it at `onnx_out`.

    basic / extended: ORT's offline optimizer at that level. all: slmc.export.fuse
    first, then ORT at EXTENDED (see the module docstring). `model_info` is the
    export's model summary (max_position_embeddings sizes the rotary caches; without
    it fuse.DEFAULT_MAX_POSITIONS). num_heads / hidden_size are kept for callers; the
    fusions read head counts from the graph. `external_data=None` decides from the
    weight size. With `check`, logits of the result are compared with the input's:
    one random step with a past (basic/extended), fuse_check's cases (all).
    """
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    if level not in _ORT_LEVELS:
        raise StageError(f"unknown optimization level {level!r}", where="export.optimize.level",
                         fix=f"use one of {sorted(_ORT_LEVELS)}")
    before = onnx.load(str(onnx_in), load_external_data=False)
    if any(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 for v in before.graph.input):
        # Optimizing on the CPU EP inserts fp16<->fp32 Casts around every op that has no
        # fp16 CPU kernel (57 on the tiny model) and saves them into the graph.
        raise StageError("an fp16 graph cannot be optimized offline on the CPU execution provider: "
                         "ORT would save CPU-only Cast nodes into it", where="export.optimize",
                         fix="skip offline optimization for fp16 bundles; the GPU session optimizes at load")
    external = needs_external_data(before) if external_data is None else external_data
    fused: FuseReport | None = None
    with tempfile.TemporaryDirectory(prefix="slmc-opt-") as tmp:
        source = onnx_in
        if level == "all":
            source = Path(tmp) / "fused.onnx"
            fused = _fuse(onnx_in, source, model_info, external)
        _ort_offline(source, onnx_out, _ORT_LEVELS[level], external)
        if fused is not None:
            _keep_metadata(source, onnx_out)
    after = onnx.load(str(onnx_out), load_external_data=False)
    diff, parity = (_parity(onnx_in, onnx_out, fused) if check else (None, None))
    notes = ["saved at ORT_ENABLE_EXTENDED at most; ORT_ENABLE_ALL rewrites can be hardware-specific "
             "and are applied by the session at load time"] + (fused.notes if fused else [])
    return OptimizeReport(
        level=level, ort_level=_ORT_LEVELS[level], transformer_fusions=fused.fusions if fused else {},
        nodes_before=len(before.graph.node), nodes_after=len(after.graph.node),
        ops_before=op_histogram(before), ops_after=op_histogram(after), external_data=external,
        max_abs_logit_diff=diff, notes=notes, kv_share_buffer=bool(fused and fused.kv_share_buffer),
        parity=parity,
    )


def _parity(onnx_in: Path, onnx_out: Path, fused: FuseReport | None):
    """(max |logit diff| without padding, per-case diffs or None); a fused graph past its
    tolerance is an error. The first number means what it always did (inputs without
    padding); left-padded batches are in the per-case diffs (see fuse_check)."""
    if fused is None:
        return max_logit_diff(onnx_in, onnx_out), None
    ops = {op.split("::")[-1] for op in fused.ops_after}
    result = check_fused(onnx_in, onnx_out, shared_buffer=fused.kv_share_buffer,
                         quantized=bool(ops & {"MatMulNBits", "MatMulInteger", "GatherBlockQuantized"}),
                         dynamic_int8="DynamicQuantizeLinear" in ops, max_positions=fused.max_positions)
    if not result.ok:
        raise StageError(f"the optimized graph's logits differ from the input's: {result.describe()}",
                         where="export.optimize",
                         fix="report this with the model's config.json; level 'extended' skips the fusions")
    unpadded = [v for k, v in result.diffs.items() if k in UNPADDED_CASES]
    return max(unpadded), result.diffs


def decoder_feed(session, *, batch: int = 1, sequence: int = 4, past: int = 3,
                 vocab: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for a decoder session (docs/bundle-format.md I/O): tokens, full mask, positions, a past."""
    rng = np.random.default_rng(seed)
    feed: dict[str, np.ndarray] = {}
    for arg in session.get_inputs():
        if arg.name == "input_ids":
            feed[arg.name] = rng.integers(0, vocab, (batch, sequence), dtype=np.int64)
        elif arg.name == "attention_mask":
            feed[arg.name] = np.ones((batch, past + sequence), dtype=np.int64)
        elif arg.name == "position_ids":
            feed[arg.name] = np.tile(np.arange(past, past + sequence, dtype=np.int64), (batch, 1))
        elif arg.name.startswith("past_key_values."):
            dtype = np.float16 if "float16" in arg.type else np.float32
            heads, head_dim = arg.shape[1], arg.shape[3]
            feed[arg.name] = rng.standard_normal((batch, heads, past, head_dim)).astype(dtype)
        else:
            raise StageError(f"decoder input {arg.name!r} is not in the bundle contract")
    return feed


def run_logits(onnx_path: Path, feed: dict[str, np.ndarray] | None = None, **feed_args) -> np.ndarray:
    """Logits (float32) of one ORT CPU run; a random decoder feed when none is given.

    A given feed's past tensors are cast to the graph's KV dtype (fp16 graphs).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = min(2, os.cpu_count() or 1)
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feed = feed if feed is not None else decoder_feed(session, **feed_args)
    kv_dtype = {a.name: np.float16 if "float16" in a.type else None for a in session.get_inputs()}
    feed = {k: v.astype(kv_dtype[k]) if kv_dtype.get(k) else v for k, v in feed.items()}
    (logits,) = session.run(["logits"], feed)
    return logits.astype(np.float32)


def max_logit_diff(path_a: Path, path_b: Path, **feed_args) -> float:
    """max |logits_a - logits_b| on the same random decoder step (past included)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path_a), providers=["CPUExecutionProvider"])
    feed = decoder_feed(session, **feed_args)
    return float(np.max(np.abs(run_logits(path_a, feed) - run_logits(path_b, feed))))
