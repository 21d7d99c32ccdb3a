"""What runtimes execute, as data shared by the rules (docs/architecture.md, "Device profiles").

Kept apart from the rules so that a precision rule, a format rule and a fix
suggestion all read the same table.
"""

from __future__ import annotations

from typing import Any

from ..estimate import bytes_per_weight, kv_dtype_bytes
from .context import shipped_options

CUDA_EP = "CUDAExecutionProvider"

# Ops a compress choice writes into the graph that TensorRT's ONNX parser rejects
# (onnx-tensorrt docs/operators.md: no MatMulInteger, no DynamicQuantizeLinear,
# no com.microsoft domain).
TRT_REJECTED_OPS = {
    "int4": ("MatMulNBits (com.microsoft)",),
    "int8-dynamic": ("MatMulInteger", "DynamicQuantizeLinear"),
}


def quant_format(cfg: Any) -> str:
    """'int8-dynamic', 'int8-static' or the precision itself (int8_mode=auto follows the runtime)."""
    p = cfg.compress.precision
    if p != "int8":
        return p
    mode = cfg.compress.int8_mode
    if mode == "auto":
        mode = "static" if cfg.runtime.name == "tensorrt" else "dynamic"
    return f"int8-{mode}"


def int4_block_sizes(cfg: Any) -> list[int]:
    """Block sizes the compress stage may use, preferred first: the configured one, or with
    block_size=auto the device's candidates (largest, i.e. fastest, first)."""
    b = cfg.compress.block_size
    return [b] if b != "auto" else sorted(set(cfg.device.int4_block_sizes), reverse=True)


def estimate_block_size(cfg: Any) -> int:
    """The block size estimates assume: the smallest candidate, whose scales take the most bytes,
    so memory limits hold whichever candidate the compress stage keeps."""
    return min(int4_block_sizes(cfg))


def kv_bytes(cfg: Any, precision: str) -> int:
    """KV cache element size: TensorRT keeps the ONNX graph's fp32 bindings (fp16/bf16 are builder
    flags there); ONNX Runtime bundles carry fp16 KV in fp16 graphs."""
    return 4 if cfg.runtime.name == "tensorrt" else kv_dtype_bytes(precision)


def runtime_precision_issue(runtime: str, ep: str, precision: str) -> tuple[str, str] | None:
    """(severity, reason) when `runtime` cannot run `precision` as slmc writes it; None when it can."""
    if runtime == "tensorrt":
        if precision == "int4":
            return "error", (
                "slmc writes int4 as ONNX Runtime's MatMulNBits (com.microsoft), which TensorRT cannot load; "
                "TensorRT takes int4 only as weight-only QDQ, which slmc does not produce"
            )
        if precision == "fp8":
            return "error", (
                "slmc's compress stage builds no fp8 Q/DQ graph for TensorRT (its TensorRT formats are int8 QDQ "
                "and the fp16/bf16 builder flags)"
            )
        return None
    if precision == "fp8":
        return "error", "ONNX Runtime has no fp8 MatMul kernels on any execution provider"
    if precision == "bf16":
        return "error", "this execution provider lacks bf16 kernels for most decoder ops, so a bf16 graph does not load"
    if precision == "fp16" and ep != CUDA_EP:
        return "warning", "slower than fp32 there: most CPU kernels are fp32-only, so ORT wraps them in Casts"
    return None


def usable_precisions(cfg: Any) -> list[str]:
    """Precisions the device executes and the chosen runtime runs without an error, smallest first."""
    ok = [
        p for p in cfg.device.precisions
        if (runtime_precision_issue(cfg.runtime.name, cfg.device.ort_execution_provider, p) or ("ok",))[0] != "error"
    ]
    return sorted(ok, key=lambda p: bytes_per_weight(p, estimate_block_size(cfg)))


def compress_option(precision: str) -> str:
    """The shipped compress option that deploys `precision` (fp32 is `none`)."""
    for name, data in shipped_options("compress").items():
        if data.get("precision") == precision:
            return name
    return precision


def shipped_devices() -> dict[str, Any]:
    """Shipped device profiles as validated DeviceConfig objects (malformed ones skipped)."""
    from pydantic import ValidationError

    from ..schema import DeviceConfig

    out = {}
    for name, data in shipped_options("device").items():
        try:
            out[name] = DeviceConfig.model_validate(data)
        except ValidationError:
            continue
    return out


def usable_bytes(device: Any) -> float:
    return device.memory_gb * 1e9 * device.usable_memory_fraction
