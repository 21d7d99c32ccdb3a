"""Runtime rules: the runtime exists on the device, and TensorRT engines are built where they run."""

from __future__ import annotations

from ._engine import rule
from ._facts import shipped_devices


@rule("runtime.available_on_device")
def available_on_device(rule, cfg, ctx):
    """runtime.name is one of the device's runtimes (e.g. TensorRT only on NVIDIA devices)."""
    rt, d = cfg.runtime.name, cfg.device
    if rt in d.runtimes:
        return
    with_rt = sorted(name for name, dev in shipped_devices().items() if rt in dev.runtimes)
    fix = f"use runtime={d.runtimes[0]}" if d.runtimes else "choose another device"
    if with_rt:
        fix += f", or a device with {rt}: {', '.join(f'device={n}' for n in with_rt)}"
    yield rule.violation(
        ("runtime.name", "device.runtimes"),
        f"{rt} is not available on {d.name}; its runtimes are {', '.join(d.runtimes)}",
        fix,
    )


def _host_builds_for_target(cfg) -> bool:
    """The compiling host may build the engine only when it is the same kind of GPU machine as the target."""
    return cfg.device.kind == "gpu" and cfg.host.accelerator == "cuda"


@rule("engine.built_on_target")
def built_on_target(rule, cfg, ctx):
    """TensorRT engines are not portable across GPUs or TensorRT versions: a target that builds its own (Jetson) gets ONNX + build_engine.sh, never a host-built engine."""
    r, d = cfg.runtime, cfg.device
    if not r.build_engine_on_host:
        return
    if r.name != "tensorrt":
        yield rule.violation(
            ("runtime.build_engine_on_host", "runtime.name"),
            f"runtime.build_engine_on_host=true has no effect with runtime={r.name} (no engine is built)",
            "remove runtime.build_engine_on_host",
            "warning",
        )
        return
    if d.engine_build == "target" and not _host_builds_for_target(cfg):
        yield rule.violation(
            ("runtime.build_engine_on_host", "device.engine_build", "host.accelerator"),
            f"{d.name} engines must be built on the device ({d.isa}, TensorRT {d.tensorrt_version}); an engine built "
            f"on this {cfg.host.accelerator} host would not load there",
            "set runtime.build_engine_on_host=false: the bundle ships ONNX + build_engine.sh, run once on the device",
        )
