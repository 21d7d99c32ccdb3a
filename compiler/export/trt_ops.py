"""Check a TensorRT-bound ONNX graph against the ONNX-TensorRT parser's support matrix.

`check_trt_ops` never raises for a problem in the graph: it returns every
problem (op, domain, node, reason) so the rule `trt.ops_supported` can report
them all at once. Only an unknown TensorRT version is an error, because then
there is nothing to check against.

`prepare_for_tensorrt` turns an export into what the parser wants to see:
model-local functions inlined, constants folded (shape arithmetic, axes
inputs), dead nodes removed; standard ONNX ops only. It uses onnxscript's
optimizer, the library the dynamo exporter itself uses, as a pass whose
post-conditions are the bundle I/O and logit parity with the export (export.passes).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnx import numpy_helper

from slmc.errors import ConfigError

from .onnx_files import load_model, op_histogram, save_model
from .passes import DecoderPipeline
from .trt_supported_ops import CONSTANT_INPUTS, KNOWN_UNSUPPORTED, OPSET_RANGE, QDQ_TYPES, SUPPORTED_OPS

_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class OpProblem:
    """One node TensorRT's ONNX parser would reject, and why."""

    op_type: str
    domain: str
    node_name: str
    reason: str

    def __str__(self) -> str:
        op = f"{self.domain}::{self.op_type}" if self.domain else self.op_type
        return f"{op} (node {self.node_name!r}): {self.reason}"


def trt_major_minor(trt_version: str) -> str:
    """'10.3.0.30' or '10.3' -> '10.3' when slmc has that version's table; else ConfigError."""
    parts = str(trt_version).strip().split(".")
    key = ".".join(parts[:2])
    if len(parts) < 2 or key not in SUPPORTED_OPS:
        known = ", ".join(sorted(SUPPORTED_OPS, key=lambda v: tuple(int(p) for p in v.split("."))))
        raise ConfigError(f"no ONNX-TensorRT operator table for TensorRT {trt_version!r}",
                          where="runtime.version",
                          fix=f"use a TensorRT version slmc knows: {known}")
    return key


def _walk(graph: onnx.GraphProto) -> Iterator[tuple[onnx.NodeProto, onnx.GraphProto]]:
    """Every node with the graph it sits in, subgraphs (If/Loop/Scan bodies) included."""
    for node in graph.node:
        yield node, graph
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                yield from _walk(sub)


def _constant_value(node: onnx.NodeProto) -> onnx.TensorProto | None:
    attr = node.attribute[0] if len(node.attribute) == 1 else None
    if attr is None:
        return None
    if attr.name == "value":
        return attr.t
    simple = {"value_int": (onnx.TensorProto.INT64, [attr.i], []),
              "value_ints": (onnx.TensorProto.INT64, list(attr.ints), [len(attr.ints)]),
              "value_float": (onnx.TensorProto.FLOAT, [attr.f], []),
              "value_floats": (onnx.TensorProto.FLOAT, list(attr.floats), [len(attr.floats)])}
    if attr.name not in simple:
        return None
    dtype, values, dims = simple[attr.name]
    return onnx.helper.make_tensor(node.output[0], dtype, dims, values)


def _constants(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto | None]:
    """Build-time constants: initializers and Constant-node outputs (value None if unreadable)."""
    found: dict[str, onnx.TensorProto | None] = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS:
            found[node.output[0]] = _constant_value(node)
    return found


def _type_name(tensor: onnx.TensorProto) -> str:
    return onnx.TensorProto.DataType.Name(tensor.data_type)


def _zero_point_problem(node, constants, allowed: frozenset[str], base_dir: str) -> str | None:
    """TensorRT requires QDQ zero points equal to 0 and a signed quantized type."""
    if len(node.input) < 3 or not node.input[2]:
        if node.op_type == "QuantizeLinear":
            dtype = next((a.i for a in node.attribute if a.name == "output_dtype"), 0)
            name = onnx.TensorProto.DataType.Name(dtype) if dtype else "UINT8"
        else:
            data = constants.get(node.input[0])
            name = _type_name(data) if data is not None else None
        if name is not None and name not in allowed:
            return f"no zero point, so the quantized type is {name}; TensorRT needs one of {sorted(allowed)}"
        return None
    if node.input[2] not in constants:
        return f"zero point {node.input[2]!r} is not a constant; TensorRT needs a constant 0"
    zero_point = constants[node.input[2]]
    if zero_point is None:
        return f"zero point {node.input[2]!r} is a Constant slmc cannot read; TensorRT needs 0"
    if _type_name(zero_point) not in allowed:
        return f"quantized type {_type_name(zero_point)}; TensorRT supports {sorted(allowed)} (zero point 0)"
    values = numpy_helper.to_array(zero_point, base_dir=base_dir)  # base_dir: external data
    if np.any(values.astype(np.float64) != 0):
        return f"zero point {node.input[2]!r} is not 0 (TensorRT supports symmetric quantization only)"
    return None


def _node_problem(node, constants, version: str, base_dir: str) -> str | None:
    if node.domain not in _DEFAULT_DOMAINS:
        return f"op of domain {node.domain!r}: TensorRT's ONNX parser reads the default domain only"
    if node.op_type not in SUPPORTED_OPS[version]:
        note = KNOWN_UNSUPPORTED.get(node.op_type, "marked unsupported or absent")
        return f"not supported by the ONNX-TensorRT {version} parser ({note})"
    if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        return _zero_point_problem(node, constants, QDQ_TYPES[version], base_dir)
    for index in CONSTANT_INPUTS[version].get(node.op_type, ()):
        if len(node.input) > index and node.input[index] and node.input[index] not in constants:
            return (f"input {index} ({node.input[index]!r}) must be a build-time constant for TensorRT "
                    f"{version}; run prepare_for_tensorrt to fold it")
    return None


def _opset_problems(model: onnx.ModelProto, version: str) -> list[OpProblem]:
    low, high = OPSET_RANGE[version]
    opset = next((o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), None)
    if opset is None or low <= opset <= high:
        return []
    return [OpProblem("<model>", "", "", f"default-domain opset {opset} is outside opsets {low}..{high} "
                                          f"that the ONNX-TensorRT {version} parser reads")]


def check_trt_ops(onnx_path: Path, trt_version: str) -> list[OpProblem]:
    """Every node TensorRT `trt_version` would refuse to parse; empty when the graph is fine."""
    version = trt_major_minor(trt_version)
    model = onnx.load(str(onnx_path), load_external_data=False)
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    problems = _opset_problems(model, version)
    constants_by_graph: dict[int, dict[str, onnx.TensorProto]] = {}
    for node, graph in _walk(model.graph):
        constants = constants_by_graph.setdefault(id(graph), _constants(graph))
        if graph is not model.graph:  # subgraphs may read the outer graph's constants
            constants = {**constants_by_graph.setdefault(id(model.graph), _constants(model.graph)),
                         **constants}
        reason = _node_problem(node, constants, version, str(Path(onnx_path).parent))
        if reason:
            problems.append(OpProblem(node.op_type, node.domain, node.name, reason))
    return problems


@dataclass(frozen=True)
class PrepareReport:
    """What prepare_for_tensorrt changed, and what TensorRT would still reject."""

    nodes_before: int
    nodes_after: int
    ops_after: dict[str, int]
    external_data: bool
    problems: list[OpProblem] = field(default_factory=list)
    parity: dict[str, float] | None = None


class InlineAndFold(ir.passes.InPlacePass):
    """onnxscript's optimizer: model-local functions inlined, constants folded, dead nodes removed."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        import onnxscript.optimizer

        onnxscript.optimizer.optimize(model)
        return ir.passes.PassResult(model, modified=True)


def prepare_for_tensorrt(onnx_in: Path, onnx_out: Path, *, trt_version: str | None = None,
                         external_data: bool | None = None, check: bool = True) -> PrepareReport:
    """Inline functions, fold constants and drop dead nodes (onnxscript), then check for `trt_version`.

    check: compare the result's logits with the input's (export.graph_parity); a decoder
    graph is needed for that, so a bare test graph passes check=False.
    """
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    model = load_model(onnx_in)
    before = sum(1 for _ in model.graph.all_nodes())
    pipeline = DecoderPipeline([InlineAndFold()], where="export.prepare_tensorrt",
                               fix="report this with the model's config.json", reference=onnx_in if check else None)
    model = pipeline.run(model)
    external = save_model(model, onnx_out, external=external_data)
    problems = check_trt_ops(onnx_out, trt_version) if trt_version else []
    return PrepareReport(nodes_before=before, nodes_after=len(model.graph), ops_after=op_histogram(model),
                         external_data=external, problems=problems,
                         parity=pipeline.parity.diffs if pipeline.parity else None)
