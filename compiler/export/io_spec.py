"""The decoder's I/O contract as plain data (docs/bundle-format.md): names, dtypes, shapes, KV layout.

Export checks the graph it builds against `decoder_io`, and every later pass keeps it
(export.passes); the manifest, the runtime and genai_config all read these dicts. The
token input names are the runtime's (slmc.runtime.session.TOKEN_INPUTS).
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from typing import Any

import onnx
import onnx_ir as ir

from slmc.runtime.session import TOKEN_INPUTS

AXES = ("batch", "sequence", "past_sequence", "total_sequence")
KV_LAYOUT = "batch,num_key_value_heads,sequence,head_dim"
PAST_KEY = "past_key_values.{layer}.key"
PAST_VALUE = "past_key_values.{layer}.value"
PRESENT_KEY = "present.{layer}.key"
PRESENT_VALUE = "present.{layer}.value"
#: every past and present K/V name starts with one of these
KV_NAME_PREFIXES = (PAST_KEY.split("{")[0], PRESENT_KEY.split("{")[0])

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.BOOL: "bool",
}


def past_names(num_layers: int) -> list[str]:
    """Past K/V input names in graph order: layer 0 key, layer 0 value, layer 1 key, ..."""
    return [n.format(layer=i) for i in range(num_layers) for n in (PAST_KEY, PAST_VALUE)]


def present_names(num_layers: int) -> list[str]:
    """Present K/V output names in graph order, matching `past_names`."""
    return [n.format(layer=i) for i in range(num_layers) for n in (PRESENT_KEY, PRESENT_VALUE)]


def _entry(name: str, dtype: str, shape: list[int | str] | None) -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": shape}


def decoder_io(
    *,
    num_layers: int,
    num_key_value_heads: int,
    head_dim: int,
    vocab_size: int,
    kv_dtype: str = "float32",
    logits_dtype: str = "float32",
) -> dict[str, list[dict[str, Any]]]:
    """The exact inputs/outputs a decoder bundle must have (docs/bundle-format.md, decoder I/O)."""
    past_shape: list[int | str] = ["batch", num_key_value_heads, "past_sequence", head_dim]
    present_shape: list[int | str] = ["batch", num_key_value_heads, "total_sequence", head_dim]
    token_shapes = {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "total_sequence"],
                    "position_ids": ["batch", "sequence"]}
    inputs = [_entry(name, "int64", list(token_shapes[name])) for name in TOKEN_INPUTS]
    inputs += [_entry(n, kv_dtype, list(past_shape)) for n in past_names(num_layers)]
    outputs = [_entry("logits", logits_dtype, ["batch", "sequence", vocab_size])]
    outputs += [_entry(n, kv_dtype, list(present_shape)) for n in present_names(num_layers)]
    return {"inputs": inputs, "outputs": outputs}


def kv_cache_spec(
    *, num_layers: int, num_key_value_heads: int, head_dim: int, dtype: str = "float32"
) -> dict[str, Any]:
    """The manifest's `kv_cache` block."""
    return {
        "layout": KV_LAYOUT,
        "num_layers": num_layers,
        "num_key_value_heads": num_key_value_heads,
        "head_dim": head_dim,
        "dtype": dtype,
        "past_key": PAST_KEY,
        "past_value": PAST_VALUE,
        "present_key": PRESENT_KEY,
        "present_value": PRESENT_VALUE,
    }


def model_summary(config: Any, parameters: int) -> dict[str, Any]:
    """The manifest's `model` block from a Hugging Face config (read generically, any decoder)."""
    heads = int(config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return {
        "architecture": str(config.model_type),
        "vocab_size": int(config.vocab_size),
        "num_hidden_layers": int(config.num_hidden_layers),
        "num_attention_heads": heads,
        "num_key_value_heads": int(getattr(config, "num_key_value_heads", None) or heads),
        "head_dim": int(head_dim),
        "hidden_size": int(config.hidden_size),
        "max_position_embeddings": int(config.max_position_embeddings),
        "parameters": int(parameters),
    }


def _dtype_name(elem_type: int) -> str:
    return _ONNX_DTYPES.get(elem_type, onnx.TensorProto.DataType.Name(elem_type).lower())


def _value_entry(value: onnx.ValueInfoProto) -> dict[str, Any]:
    tensor = value.type.tensor_type
    shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in tensor.shape.dim] \
        if tensor.HasField("shape") else None
    return _entry(value.name, _dtype_name(tensor.elem_type), shape)


def _ir_entry(value: ir.Value) -> dict[str, Any]:
    # an unnamed dynamic axis reads 0, as in a proto
    shape = [d if isinstance(d, int) else (d.value or 0) for d in value.shape] if value.shape is not None else None
    return _entry(value.name, _dtype_name(int(value.dtype)) if value.dtype is not None else "undefined", shape)


def read_io(model: ir.Model | onnx.ModelProto | str | PathLike) -> dict[str, list[dict[str, Any]]]:
    """The inputs/outputs a model actually declares, in the `decoder_io` form.

    Loads only the graph (never the external weights) when given a path.
    """
    if isinstance(model, ir.Model):
        graph = model.graph
        return {"inputs": [_ir_entry(v) for v in graph.inputs if not v.is_initializer()],
                "outputs": [_ir_entry(v) for v in graph.outputs]}
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    return {
        "inputs": [_value_entry(v) for v in graph.input if v.name not in initializers],
        "outputs": [_value_entry(v) for v in graph.output],
    }


def io_mismatches(actual: Mapping[str, list], expected: Mapping[str, list]) -> list[str]:
    """Human-readable differences between two I/O dicts; empty when they agree. An expected
    shape of None (none declared) accepts any shape."""
    problems = []
    for side in ("inputs", "outputs"):
        got = {e["name"]: e for e in actual[side]}
        want = {e["name"]: e for e in expected[side]}
        if list(got) != list(want):
            problems.append(f"{side}: names {list(got)} != expected {list(want)}")
            continue
        for name, entry in want.items():
            if {**got[name], "shape": None} != {**entry, "shape": None} or (
                    entry["shape"] is not None and got[name]["shape"] != entry["shape"]):
                problems.append(f"{side} {name}: {got[name]} != expected {entry}")
    return problems
