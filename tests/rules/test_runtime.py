"""runtime.available_on_device and engine.built_on_target."""

from __future__ import annotations


def test_tensorrt_on_cpu_lists_the_device_runtimes(check):
    (v,) = check(["device=cpu", "runtime=tensorrt"], "runtime.available_on_device")
    assert v.severity == "error" and "its runtimes are ort" in v.message
    assert v.fix.startswith("use runtime=ort") and "device=jetson_orin_nano" in v.fix


def test_available_runtimes_pass(check):
    for overrides in (["device=jetson_orin_nano", "runtime=tensorrt"], ["device=mobile_arm64", "runtime=ort"]):
        assert check(overrides, "runtime.available_on_device") == []


def test_jetson_engine_built_on_host_is_an_error(check):
    (v,) = check(["device=jetson_orin_nano", "runtime=tensorrt", "runtime.build_engine_on_host=true"],
                 "engine.built_on_target")
    assert v.severity == "error" and "sm87" in v.message and "build_engine_on_host=false" in v.fix
    assert check(["device=jetson_orin_nano", "runtime=tensorrt"], "engine.built_on_target") == []


def test_gpu_server_may_build_on_a_cuda_host_only(check):
    on_host = ["device=gpu_server", "runtime=tensorrt", "runtime.build_engine_on_host=true"]
    assert check([*on_host, "host.accelerator=cuda"], "engine.built_on_target") == []
    assert check(on_host, "engine.built_on_target", "error")  # default host is a CPU machine


def test_build_on_host_with_ort_is_a_warning(check):
    (v,) = check(["runtime.build_engine_on_host=true"], "engine.built_on_target")
    assert v.severity == "warning"
