"""Precision rules: the deployed precision against the device's hardware and the runtime's kernels."""

from __future__ import annotations

from ._engine import rule
from ._facts import compress_option, runtime_precision_issue, usable_precisions

# What to deploy instead of a precision the device lacks, best first.
_NEAREST = {
    "fp8": ("fp16", "bf16", "int8"),
    "bf16": ("fp16", "fp32"),
    "fp16": ("bf16", "fp32", "int8"),
    "int4": ("int8", "fp16"),
    "int8": ("int4", "fp16", "fp32"),
    "fp32": ("fp16", "int8"),
}


def _alternatives(cfg, exclude: str) -> list[str]:
    ok = usable_precisions(cfg)
    return [p for p in _NEAREST[exclude] if p in ok]


@rule("precision.supported_by_device")
def supported_by_device(rule, cfg, ctx):
    """compress.precision is one the device executes natively (device.precisions), e.g. no fp8 on sm87."""
    p, d = cfg.compress.precision, cfg.device
    if p in d.precisions:
        return
    alts = _alternatives(cfg, p)
    fix = " or ".join(f"compress={compress_option(a)}" for a in alts) or "choose a precision the device executes"
    yield rule.violation(
        ("compress.precision", "device.precisions"),
        f"{d.name} ({d.isa}) does not execute {p}; it supports {', '.join(d.precisions)}",
        f"use {fix}, or a device whose precisions include {p}",
    )


@rule("precision.supported_by_runtime")
def supported_by_runtime(rule, cfg, ctx):
    """The runtime (and ONNX Runtime's execution provider) runs compress.precision: no fp8/bf16 on ORT, no slmc int4 on TensorRT; fp16 on ORT's CPU EP is a warning (slower than fp32)."""
    p, rt, ep = cfg.compress.precision, cfg.runtime.name, cfg.device.ort_execution_provider
    issue = runtime_precision_issue(rt, ep, p)
    if issue is None:
        return
    severity, reason = issue
    where = f"{rt} ({ep})" if rt == "ort" else rt
    alts = _alternatives(cfg, p)
    fix = " or ".join(f"compress={compress_option(a)}" for a in alts)
    other = "tensorrt" if rt == "ort" else "ort"
    if other in cfg.device.runtimes and runtime_precision_issue(other, ep, p) is None:
        fix = f"{fix} or runtime={other}" if fix else f"runtime={other}"
    yield rule.violation(
        ("compress.precision", "runtime.name"),
        f"{p} on {where}: {reason}",
        f"use {fix}" if fix else "choose another precision or runtime",
        severity,
    )
