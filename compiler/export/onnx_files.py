"""ONNX models on disk and in memory: loading, saving (with external data), sizes, op counts.

A model passes between the export steps as one `onnx_ir.Model` held in memory; these
helpers are the stage boundaries, where it is read from or written to the run folder.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import onnx
import onnx_ir as ir

#: Models whose weights exceed this are saved with external data (model.onnx.data).
EXTERNAL_DATA_THRESHOLD = 100 * 1024 * 1024
#: Tensors at least this large go to the external-data file when there is one.
EXTERNAL_TENSOR_MIN_BYTES = 1024
#: One protobuf message cannot exceed 2 GiB; a larger model reaches ONNX Runtime as a file.
PROTOBUF_LIMIT = 2**31 - 1
#: What the graph itself (nodes, names, small tensors) may take of that limit.
_GRAPH_HEADROOM = 64 * 1024 * 1024


def data_file(onnx_path: Path) -> Path:
    """The external-data file next to a model: `model.onnx` -> `model.onnx.data`."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".data")


def load_model(path: Path) -> ir.Model:
    """The model at `path` with its weights in memory, so it no longer depends on the file
    (its output may then replace the file or sit beside it)."""
    model = ir.load(Path(path))
    ir.external_data.load_to_model(model)
    return model


def weight_bytes(model: ir.Model) -> int:
    """Bytes of all initializers held in memory."""
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def needs_external_data(model: ir.Model, threshold: int = EXTERNAL_DATA_THRESHOLD) -> bool:
    return weight_bytes(model) > threshold


def save_model(model: ir.Model, path: Path, *, external: bool | None = None) -> bool:
    """Save `model` (weights in memory) at `path`, with model.onnx.data when asked or when
    it is large; returns whether it did. A stale data file from an earlier run is removed
    first, and the data file gets the model file's permissions."""
    path = Path(path)
    external = needs_external_data(model) if external is None else external
    path.parent.mkdir(parents=True, exist_ok=True)
    data = data_file(path)
    data.unlink(missing_ok=True)
    if external:
        ir.save(model, path, external_data=data.name, size_threshold_bytes=EXTERNAL_TENSOR_MIN_BYTES,
                max_workers=1)
        match_mode(data, path)
    else:
        ir.save(model, path)
    return external


def match_mode(data: Path, model: Path) -> None:
    """Give an external-data file the model file's permissions (it is written 0600, which
    a bundle copied to another user or device could not read)."""
    if data.exists():
        data.chmod(model.stat().st_mode & 0o777)


def copy_onnx(onnx_in: Path, onnx_out: Path) -> None:
    """Copy a model and its external-data file (if any), keeping the data file's name relative."""
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    model = ir.load(onnx_in)  # weights stay on disk until asked for
    if not any(isinstance(v.const_value, ir.ExternalTensor) for v in model.graph.initializers.values()):
        data_file(onnx_out).unlink(missing_ok=True)
        shutil.copyfile(onnx_in, onnx_out)
        return
    ir.external_data.load_to_model(model)
    save_model(model, onnx_out, external=True)  # the data file's name is written inside the graph


def model_bytes(onnx_path: Path) -> int:
    """Size on disk of a model plus its external-data file."""
    onnx_path = Path(onnx_path)
    data = data_file(onnx_path)
    return onnx_path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def op_histogram(model: ir.Model | ir.Graph | onnx.ModelProto) -> dict[str, int]:
    """Node count per op type of the main graph; ops outside the default domain read `domain::Op`."""
    nodes: Iterable = model.graph.node if isinstance(model, onnx.ModelProto) else (
        model.graph if isinstance(model, ir.Model) else model)
    counts = Counter(f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in nodes)
    return dict(sorted(counts.items()))


def ort_source(model: ir.Model, folder: Path) -> bytes | Path:
    """What onnxruntime can open `model` from: its serialized bytes, so nothing is written.

    A protobuf message cannot pass 2 GiB, so a model with more weights is saved into
    `folder` instead: the one disk round trip left on this path (ORT could take the weights
    as OrtValues instead, but only models this large would gain from it).
    """
    if weight_bytes(model) < PROTOBUF_LIMIT - _GRAPH_HEADROOM:
        return ir.to_proto(model).SerializeToString()
    path = Path(folder) / "model.onnx"
    save_model(model, path, external=True)
    return path
