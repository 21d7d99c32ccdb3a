"""trt.ops_supported at config time."""

from __future__ import annotations

TRT = ["device=jetson_orin_nano", "runtime=tensorrt"]


def test_int4_puts_matmulnbits_into_a_tensorrt_graph(check):
    (v,) = check([*TRT, "compress=int4"], "trt.ops_supported")
    assert v.severity == "error" and "MatMulNBits (com.microsoft)" in v.message and "TensorRT 10.3" in v.message


def test_dynamic_int8_puts_matmulinteger_into_a_tensorrt_graph(check):
    (v,) = check([*TRT, "compress=int8", "compress.int8_mode=dynamic"], "trt.ops_supported")
    assert "MatMulInteger" in v.message and "DynamicQuantizeLinear" in v.message
    assert "int8_mode=static" in v.fix


def test_supported_formats_pass(check):
    for extra in (["compress=int8"], ["compress=int8", "compress.int8_mode=static"], ["compress=fp16"], ["compress=none"]):
        assert check([*TRT, *extra], "trt.ops_supported") == []
    assert check(["compress=int4"], "trt.ops_supported") == []  # ORT graph: not this rule's business


def test_tensorrt_version_must_be_pinned(check):
    (v,) = check([*TRT, "device.tensorrt_version=null"], "trt.ops_supported")
    assert v.paths == ("device.tensorrt_version",)


def test_qdq_zero_points_must_be_zero(check):
    (v,) = check([*TRT, "compress=int8", "compress.int8_mode=static", "compress.symmetric=false"], "trt.ops_supported")
    assert "zero points of 0" in v.message and v.fix == "set compress.symmetric=true"
