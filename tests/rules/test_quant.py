"""quant.format_matches_runtime, quant.calibration_required, quant.block_size_power_of_two."""

from __future__ import annotations

import pytest

JETSON_TRT = ["device=jetson_orin_nano", "runtime=tensorrt"]


def test_dynamic_int8_on_tensorrt_needs_static(check):
    (v,) = check([*JETSON_TRT, "compress=int8", "compress.int8_mode=dynamic"], "quant.format_matches_runtime")
    assert v.severity == "error" and "MatMulInteger" in v.message and "int8_mode=static" in v.fix
    assert check([*JETSON_TRT, "compress=int8", "compress.int8_mode=static"], "quant.format_matches_runtime") == []
    # the default, auto, is static QDQ on TensorRT
    assert check([*JETSON_TRT, "compress=int8"], "quant.format_matches_runtime") == []


def test_dynamic_int8_on_the_cuda_ep_warns_about_cpu_fallback(check):
    (v,) = check(["device=jetson_orin_nano", "runtime=ort", "compress=int8"], "quant.format_matches_runtime")
    assert v.severity == "warning" and "fall back" in v.message and "compress=fp16" in v.fix
    assert check(["device=cpu", "compress=int8"], "quant.format_matches_runtime") == []
    assert check(["device=gpu_server", "runtime=ort", "compress=int4"], "quant.format_matches_runtime") == []


def test_static_int8_needs_calibration_samples(check):
    static = [*JETSON_TRT, "compress=int8", "compress.int8_mode=static"]
    (v,) = check([*static, "compress.calibration_samples=0"], "quant.calibration_required")
    assert v.severity == "error" and "calibration_samples=0" in v.message and "calibration_samples=16" in v.fix
    assert check(static, "quant.calibration_required") == []


def test_tensorrt_int8_needs_calibration_but_dynamic_ort_does_not(check):
    assert check([*JETSON_TRT, "compress=int8", "compress.calibration_samples=0"], "quant.calibration_required")
    assert check(["compress=int8", "compress.calibration_samples=0"], "quant.calibration_required") == []
    assert check(["compress=none", "compress.calibration_samples=0"], "quant.calibration_required") == []


def test_int4_block_size_must_be_a_power_of_two(check):
    (v,) = check(["compress=int4", "compress.block_size=48"], "quant.block_size_power_of_two")
    assert "48" in v.message and "block_size=32 or 64" in v.fix
    assert check(["compress=int4", "compress.block_size=128"], "quant.block_size_power_of_two") == []
    assert check(["compress=int8", "compress.block_size=48"], "quant.block_size_power_of_two") == []


def test_static_int8_on_onnx_runtime_is_not_built_and_says_so(check):
    (v,) = check(["compress=int8", "compress.int8_mode=static"], "quant.format_matches_runtime")
    assert v.severity == "warning" and "dynamic int8" in v.message


def test_gptq_needs_calibration_samples(check):
    (v,) = check(["compress=int4", "compress.int4_algo=gptq", "compress.calibration_samples=0"],
                 "quant.int4_algo_needs_calibration")
    assert v.severity == "error" and "calibration_samples=0" in v.message and "calibration_samples=16" in v.fix
    assert check(["compress=int4", "compress.int4_algo=gptq"], "quant.int4_algo_needs_calibration") == []
    # the data-free algorithms need none
    assert check(["compress=int4", "compress.int4_algo=hqq", "compress.calibration_samples=0"],
                 "quant.int4_algo_needs_calibration") == []


def test_int4_algo_is_ignored_at_other_precisions(check):
    (v,) = check(["compress=int8", "compress.int4_algo=kquant"], "quant.int4_algo_only_int4")
    assert v.severity == "warning" and "int8" in v.message and "compress=int4" in v.fix
    assert check(["compress=int4", "compress.int4_algo=kquant"], "quant.int4_algo_only_int4") == []
    assert check(["compress=int8"], "quant.int4_algo_only_int4") == []  # the default, rtn, says nothing


def test_hqq_and_kquant_are_asymmetric(check):
    for algo in ("hqq", "kquant", "gptq"):
        (v,) = check(["compress=int4", f"compress.int4_algo={algo}"], "quant.int4_algo_asymmetric")
        assert v.severity == "warning" and "zero point" in v.message and "symmetric=false" in v.fix
        assert check(["compress=int4", f"compress.int4_algo={algo}", "compress.symmetric=false"],
                     "quant.int4_algo_asymmetric") == []
    assert check(["compress=int4"], "quant.int4_algo_asymmetric") == []  # rtn honours compress.symmetric


def test_an_unknown_int4_algo_is_refused_with_the_choices():
    from slmc.errors import SlmcError
    from slmc.load import load_config

    with pytest.raises(SlmcError) as err:
        load_config(["compress=int4", "compress.int4_algo=awq"])
    text = err.value.render()
    assert "compress.int4_algo" in text and "gptq" in text


def test_hqq_warns_that_cpu_int4_decodes_slowly(check):
    (v,) = check(["compress=int4", "compress.int4_algo=hqq"], "quant.int4_algo_cpu_speed")
    assert v.severity == "warning" and "float zero points" in v.message and "int4_algo=kquant" in v.fix
    assert "CPUExecutionProvider" in v.message
    (v,) = check(["device=mobile_arm64", "compress=int4", "compress.int4_algo=hqq",
                  "device.ort_execution_provider=XnnpackExecutionProvider"], "quant.int4_algo_cpu_speed")
    assert "XnnpackExecutionProvider" in v.message
    assert check(["device=gpu_server", "runtime=ort", "compress=int4", "compress.int4_algo=hqq"],
                 "quant.int4_algo_cpu_speed") == []
    for algo in ("rtn", "kquant", "gptq"):  # uint8 zero points (or none): MLAS prepacks them
        assert check(["compress=int4", f"compress.int4_algo={algo}", "compress.calibration_samples=4"],
                     "quant.int4_algo_cpu_speed") == []
