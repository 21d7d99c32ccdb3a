"""precision.supported_by_device and precision.supported_by_runtime."""

from __future__ import annotations


def test_fp8_on_sm87_is_rejected_with_supported_list(check):
    (v,) = check(["device=jetson_orin_nano", "runtime=tensorrt", "compress=fp8"], "precision.supported_by_device")
    assert v.severity == "error" and "sm87" in v.message and "fp32, fp16, int8" in v.message
    assert "compress=fp16" in v.fix


def test_bf16_on_jetson_and_fp16_on_cpu_are_rejected(check):
    assert check(["device=jetson_agx_orin", "runtime=tensorrt", "compress=bf16"], "precision.supported_by_device")
    (v,) = check(["device=cpu", "compress=fp16"], "precision.supported_by_device")
    assert "compress=none" in v.fix or "compress=int8" in v.fix


def test_supported_precisions_pass(check):
    for overrides in (["device=gpu_server", "runtime=tensorrt", "compress=fp8"],
                      ["device=jetson_orin_nano", "runtime=tensorrt", "compress=fp16"],
                      ["device=cpu", "compress=int4"], ["device=mobile_arm64", "compress=int8"]):
        assert check(overrides, "precision.supported_by_device") == []


def test_fp8_and_bf16_on_onnx_runtime_are_errors(check):
    (v,) = check(["device=gpu_server", "runtime=ort", "compress=fp8"], "precision.supported_by_runtime")
    assert v.severity == "error" and "fp8" in v.message and "compress=fp16" in v.fix
    (v,) = check(["device=gpu_server", "runtime=ort", "compress=bf16"], "precision.supported_by_runtime")
    assert v.severity == "error" and "CUDAExecutionProvider" in v.message and "compress=fp16" in v.fix


def test_fp16_on_the_cpu_ep_is_a_warning(check):
    (v,) = check(["device=cpu", "compress=fp16"], "precision.supported_by_runtime")
    assert v.severity == "warning" and "slower than fp32" in v.message


def test_fp8_on_tensorrt_is_an_error_until_slmc_builds_fp8_qdq(check):
    (v,) = check(["device=gpu_server", "runtime=tensorrt", "compress=fp8"], "precision.supported_by_runtime")
    assert v.severity == "error" and "no fp8 Q/DQ graph" in v.message


def test_int4_on_tensorrt_is_an_error_naming_the_format(check):
    (v,) = check(["device=gpu_server", "runtime=tensorrt", "compress=int4"], "precision.supported_by_runtime")
    assert v.severity == "error" and "MatMulNBits" in v.message and "runtime=ort" in v.fix


def test_runtime_supported_precisions_pass(check):
    for overrides in (["device=gpu_server", "runtime=ort", "compress=fp16"],
                      ["device=gpu_server", "runtime=ort", "compress=int4"],
                      ["device=gpu_server", "runtime=tensorrt", "compress=bf16"],
                      ["device=cpu", "compress=int8"]):
        assert check(overrides, "precision.supported_by_runtime") == []
