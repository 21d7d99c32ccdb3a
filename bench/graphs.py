"""What each system's ONNX graph holds: node counts, fused ops, and the weight bytes a decode step reads.

Bytes read per token = every initializer, except a table that only feeds the token
embedding lookup (Gather/GatherBlockQuantized on input_ids): a step reads one row of
it, not the whole table. A tied embedding also feeds the LM head, so it stays counted.
Initializer sizes come from the graph's declared shapes, so external data is not loaded.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

FUSED = ("GroupQueryAttention", "MultiHeadAttention", "Attention", "MatMulNBits", "SkipSimplifiedLayerNormalization",
         "SimplifiedLayerNormalization", "RotaryEmbedding", "GatherBlockQuantized", "MatMulInteger",
         "DynamicQuantizeMatMul", "FusedMatMul")
EMBED_LOOKUPS = ("Gather", "GatherBlockQuantized")


def _tensor_bytes(tensor) -> int:
    import numpy as np
    from onnx import helper

    count = int(np.prod(tensor.dims)) if tensor.dims else 1
    dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
    bits = 4 if tensor.data_type in (21, 22) else np.dtype(dtype).itemsize * 8  # (u)int4 packs two per byte
    return (count * bits + 7) // 8


def files_bytes(model_path: Path) -> int:
    """The model file plus its external-data files (model.onnx.data, model.onnx_data, ...)."""
    folder = Path(model_path).parent
    stem = Path(model_path).name
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name.startswith(stem))


def graph_stats(model_path: Path) -> dict:
    """Node count, op histogram, fused-op counts and weight bytes (all, and read per decode step)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    ops = Counter(n.op_type for n in graph.node)
    sizes = {t.name: _tensor_bytes(t) for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    lookup_only = [name for name, users in consumers.items() if name in sizes and users
                   and all(n.op_type in EMBED_LOOKUPS and n.input[0] == name and "input_ids" in n.input[1]
                           for n in users)]
    total = sum(sizes.values())
    return {
        "nodes": len(graph.node),
        "ops_top": dict(ops.most_common(8)),
        "fused_ops": {op: ops[op] for op in FUSED if ops[op]},
        "bytes_on_disk": files_bytes(model_path),
        "initializer_bytes": total,
        "embedding_lookup_bytes": sum(sizes[n] for n in lookup_only),
        "bytes_read_per_token": total - sum(sizes[n] for n in lookup_only),
    }


def missing_external_data(model_path: Path) -> list[str]:
    """External-data files the model names that are not beside it (a model that cannot load)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    names = {entry.value for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
             for entry in t.external_data if entry.key == "location"}
    return sorted(n for n in names if not (Path(model_path).parent / n).is_file())


def ort_optimized_nodes(model_path: Path, threads: int = 1) -> int | None:
    """Nodes left after ONNX Runtime's ORT_ENABLE_ALL optimizations on the CPU provider."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.log_severity_level = 4
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "optimized.data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        try:
            ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
            return len(onnx.load(str(Path(tmp) / "optimized.onnx"), load_external_data=False).graph.node)
        except Exception:  # noqa: BLE001 - a count we cannot get is reported as missing, not fatal
            return None


def safetensors_stats(checkpoint: Path) -> dict:
    """Weight bytes of a Hugging Face checkpoint (PyTorch eager reads these), embedding lookup excluded when untied."""
    from safetensors import safe_open

    sizes = {}
    with safe_open(str(Path(checkpoint) / "model.safetensors"), framework="numpy") as handle:
        for name in handle.keys():
            tensor = handle.get_slice(name)
            count = 1
            for dim in tensor.get_shape():
                count *= dim
            sizes[name] = count * {"F32": 4, "F16": 2, "BF16": 2}.get(tensor.get_dtype(), 4)
    total = sum(sizes.values())
    tied = "lm_head.weight" not in sizes
    embed = 0 if tied else sum(v for k, v in sizes.items() if k.endswith("embed_tokens.weight"))
    return {"bytes_on_disk": (Path(checkpoint) / "model.safetensors").stat().st_size, "initializer_bytes": total,
            "embedding_lookup_bytes": embed, "bytes_read_per_token": total - embed}
