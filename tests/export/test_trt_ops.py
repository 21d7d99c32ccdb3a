"""check_trt_ops() / prepare_for_tensorrt(): what TensorRT's ONNX parser would refuse, and why."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from slmc.errors import ConfigError
from slmc.export.graph_parity import UNPADDED_CASES, compare_graphs
from slmc.export.onnx_files import save_model
from slmc.export.quantize import quantize
from slmc.export.trt_ops import check_trt_ops, prepare_for_tensorrt, trt_major_minor
from slmc.export.trt_supported_ops import SUPPORTED_OPS


def _save(tmp_path, nodes, inits=(), name="g.onnx", inputs=None, opset=18):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])]
    graph = helper.make_graph(nodes, "g", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _qdq(tmp_path, zero_point: np.ndarray):
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
             numpy_helper.from_array(zero_point, "zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], name="quant"),
             helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["y"], name="dequant")]
    return _save(tmp_path, nodes, inits)


@pytest.mark.parametrize("version", ["10.3", "10.15"])
def test_plain_dynamo_export_is_accepted(tiny_llama_export, version):
    assert check_trt_ops(tiny_llama_export.onnx_path, version) == []


def test_int4_matmulnbits_is_rejected_by_name(tiny_llama_export, tmp_path):
    out = tmp_path / "int4.onnx"
    quantize(tiny_llama_export.onnx_path, out, precision="int4", target="ort")
    problems = check_trt_ops(out, "10.3")
    model_level = [p for p in problems if p.op_type == "<model>"]  # int4 types raise the opset to 21
    problems = [p for p in problems if p.op_type != "<model>"]
    assert len(model_level) == 1 and "opset 21" in model_level[0].reason
    contrib = [n.name for n in onnx.load(str(out)).graph.node if n.domain == "com.microsoft"]
    assert sorted(p.node_name for p in problems) == sorted(contrib)
    assert {(p.op_type, p.domain) for p in problems} == {
        ("MatMulNBits", "com.microsoft"), ("GatherBlockQuantized", "com.microsoft")}
    assert "com.microsoft" in str(problems[0]) and problems[0].node_name in str(problems[0])


def test_int8_dynamic_is_rejected(tiny_llama_export, tmp_path):
    out = tmp_path / "int8.onnx"
    quantize(tiny_llama_export.onnx_path, out, precision="int8", target="ort")
    problems = check_trt_ops(out, "10.15")
    by_op = {p.op_type: p.reason for p in problems}
    # the embedding's DequantizeLinear reads uint8 (asymmetric): TensorRT wants int8, zero point 0
    assert set(by_op) == {"MatMulInteger", "DynamicQuantizeLinear", "DequantizeLinear"}
    assert "QDQ" in by_op["MatMulInteger"] and "UINT8" in by_op["DequantizeLinear"]


def test_qdq_with_int8_zero_point_0_is_accepted(tmp_path):
    assert check_trt_ops(_qdq(tmp_path, np.array(0, np.int8)), "10.3") == []


@pytest.mark.parametrize(("zero_point", "reason"), [
    (np.array(3, np.int8), "is not 0"),
    (np.array(0, np.uint8), "UINT8"),
])
def test_qdq_zero_point_rules(tmp_path, zero_point, reason):
    problems = check_trt_ops(_qdq(tmp_path, zero_point), "10.3")
    assert [p.node_name for p in problems] == ["quant", "dequant"]
    assert all(reason in p.reason for p in problems)


def test_quantize_without_zero_point_defaults_to_uint8(tmp_path):
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "scale")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale"], ["q"], name="quant"),
             helper.make_node("DequantizeLinear", ["q", "scale"], ["y"], name="dequant")]
    problems = check_trt_ops(_save(tmp_path, nodes, inits), "10.3")
    assert [(p.node_name, "UINT8" in p.reason) for p in problems] == [("quant", True)]


def test_contrib_and_unsupported_ops_are_named(tmp_path):
    nodes = [helper.make_node("FastGelu", ["x"], ["a"], name="gelu", domain="com.microsoft"),
             helper.make_node("Unique", ["a"], ["y"], name="uniq")]
    problems = check_trt_ops(_save(tmp_path, nodes), "10.15")
    assert [(p.op_type, p.domain, p.node_name) for p in problems] == [
        ("FastGelu", "com.microsoft", "gelu"), ("Unique", "", "uniq")]


def test_rmsnormalization_is_new_in_10_15(tmp_path):
    scale = numpy_helper.from_array(np.ones(4, np.float32), "scale")
    path = _save(tmp_path, [helper.make_node("RMSNormalization", ["x", "scale"], ["y"], name="rms")],
                 [scale], opset=23)
    assert check_trt_ops(path, "10.15") == []
    old = check_trt_ops(path, "10.3")  # 10.3 reads opsets 9..20 and has no RMSNormalization
    assert [(p.op_type, p.node_name) for p in old] == [("<model>", ""), ("RMSNormalization", "rms")]
    assert "opset 23" in old[0].reason


def _runtime_axes_graph(tmp_path):
    """Unsqueeze whose axes come from an Add of two constants: foldable, but not a constant yet."""
    inits = [numpy_helper.from_array(np.array([0], np.int64), "a"),
             numpy_helper.from_array(np.array([1], np.int64), "b")]
    nodes = [helper.make_node("Add", ["a", "b"], ["axes"], name="axes_add"),
             helper.make_node("Unsqueeze", ["x", "axes"], ["y"], name="unsq")]
    return _save(tmp_path, nodes, inits, name="axes.onnx")


def test_constant_input_rule_and_prepare_folds_it(tmp_path):
    path = _runtime_axes_graph(tmp_path)
    problems = check_trt_ops(path, "10.3")
    assert [(p.node_name, "build-time constant" in p.reason) for p in problems] == [("unsq", True)]
    report = prepare_for_tensorrt(path, tmp_path / "prepared.onnx", trt_version="10.3", check=False)
    assert report.problems == [] and report.ops_after == {"Unsqueeze": 1} and report.parity is None
    assert check_trt_ops(tmp_path / "prepared.onnx", "10.3") == []


def test_prepare_keeps_the_export_equivalent(tiny_llama_export, tmp_path):
    out = tmp_path / "model.onnx"
    report = prepare_for_tensorrt(tiny_llama_export.onnx_path, out, trt_version="10.3")
    assert report.problems == []
    assert all("::" not in op for op in report.ops_after)  # standard ops only
    assert report.nodes_after <= report.nodes_before
    assert set(report.parity) == {*UNPADDED_CASES, "left_padded_batch2"} and max(report.parity.values()) < 1e-5
    again = compare_graphs(tiny_llama_export.onnx_path, out, shared_buffer=False, seed=4)
    assert again.ok and again.unpadded < 1e-5, again.describe()


def test_versions():
    assert trt_major_minor("10.3.0.30") == "10.3"
    assert SUPPORTED_OPS["10.3"] < SUPPORTED_OPS["10.15"]
    assert not {"MatMulInteger", "DynamicQuantizeLinear"} & SUPPORTED_OPS["10.15"]
    with pytest.raises(ConfigError, match=r"10\.3, 10\.15"):
        trt_major_minor("8.6")
    with pytest.raises(ConfigError):
        check_trt_ops("unused.onnx", "11")


def test_external_per_channel_zero_points_are_read(tmp_path):
    def model(zero_point: int) -> onnx.ModelProto:
        channels = 2048  # 2 kB of zero points: above save_model's 1 kB inline threshold
        inits = [numpy_helper.from_array(np.ones((4, channels), np.int8), "w"),
                 numpy_helper.from_array(np.full(channels, 0.1, np.float32), "scale"),
                 numpy_helper.from_array(np.full(channels, zero_point, np.int8), "zp")]
        node = helper.make_node("DequantizeLinear", ["w", "scale", "zp"], ["y"], name="dq", axis=1)
        output = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        graph = helper.make_graph([node], "g", [], [output], inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])

    path = tmp_path / "model.onnx"
    for zero_point, expected in ((0, []), (1, ["dq"])):
        save_model(ir.from_proto(model(zero_point)), path, external=True)
        assert (tmp_path / "model.onnx.data").exists()
        assert [p.node_name for p in check_trt_ops(path, "10.3")] == expected
