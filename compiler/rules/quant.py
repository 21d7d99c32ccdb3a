"""Quantization rules: the format each runtime needs, its calibration data, its block size, the int4 algorithm."""

from __future__ import annotations

from ._engine import rule
from ._facts import CUDA_EP, compress_option, quant_format, usable_precisions


@rule("quant.format_matches_runtime")
def format_matches_runtime(rule, cfg, ctx):
    """The quantized op format suits the runtime: TensorRT int8 is static QDQ; dynamic int8 (MatMulInteger) on ORT's CUDA EP falls back to the CPU (warning); MatMulNBits int4 is for ORT's CPU/CUDA EPs."""
    fmt, rt, ep = quant_format(cfg), cfg.runtime.name, cfg.device.ort_execution_provider
    if fmt == "int8-dynamic" and rt == "tensorrt":
        yield rule.violation(
            ("compress.int8_mode", "runtime.name"),
            "dynamic int8 writes MatMulInteger + DynamicQuantizeLinear; TensorRT runs int8 only as static "
            "QuantizeLinear/DequantizeLinear (QDQ) pairs with calibrated scales",
            "set compress.int8_mode=static (calibrated on compress.calibration_samples held-out sequences)",
        )
    elif fmt == "int8-dynamic" and rt == "ort" and ep == CUDA_EP:
        others = [f"compress={compress_option(p)}" for p in ("fp16", "int4") if p in usable_precisions(cfg)]
        yield rule.violation(
            ("compress.int8_mode", "device.ort_execution_provider"),
            f"dynamic int8 (MatMulInteger, DynamicQuantizeLinear) has no {ep} kernels: those nodes fall back to "
            "the CPU EP, with a device-host copy around each one, every token",
            f"use {' or '.join(others)} on the CUDA EP, or runtime=tensorrt with compress.int8_mode=static"
            if others else "use runtime=tensorrt with compress.int8_mode=static",
            "warning",
        )
    elif fmt == "int8-static" and rt == "ort":
        yield rule.violation(
            ("compress.int8_mode", "runtime.name"),
            "compress.int8_mode=static is not used for ONNX Runtime: slmc's compress stage writes dynamic int8 "
            "(MatMulInteger) there and builds static QDQ only for TensorRT",
            "remove compress.int8_mode=static (or use runtime=tensorrt)",
            "warning",
        )


def _needs_calibration(cfg) -> bool:
    """Static int8 is calibrated; slmc builds it for TensorRT (which also gets it when int8_mode says dynamic)."""
    return cfg.runtime.name == "tensorrt" and cfg.compress.precision in ("int8", "fp8")


@rule("quant.calibration_required")
def calibration_required(rule, cfg, ctx):
    """Static int8 for TensorRT (QDQ with calibrated activation scales) needs compress.calibration_samples > 0 held-out sequences."""
    if not _needs_calibration(cfg):
        return
    c = cfg.compress
    if c.calibration_samples > 0:
        return
    what = f"TensorRT {c.precision} (static Q/DQ)"
    yield rule.violation(
        ("compress.calibration_samples", "compress.int8_mode"),
        f"{what} needs activation ranges from calibration data, but compress.calibration_samples=0",
        "set compress.calibration_samples=16 (held-out sequences; more gives steadier scales)",
    )


@rule("quant.block_size_power_of_two")
def block_size_power_of_two(rule, cfg, ctx):
    """int4 MatMulNBits blocks are a power of two (≥ 16, the schema's floor)."""
    c = cfg.compress
    if c.precision != "int4":
        return
    b = c.block_size
    if b != "auto" and b & (b - 1):
        lower, upper = 1 << (b.bit_length() - 1), 1 << b.bit_length()
        yield rule.violation(
            ("compress.block_size",),
            f"compress.block_size={b} is not a power of two; MatMulNBits takes 16, 32, 64, 128, 256",
            f"set compress.block_size={lower} or {upper}",
        )


@rule("quant.int4_algo_needs_calibration")
def int4_algo_needs_calibration(rule, cfg, ctx):
    """compress.int4_algo=gptq weighs its rounding by activations: it needs compress.calibration_samples > 0 sequences of training text."""
    c = cfg.compress
    if c.precision != "int4" or c.int4_algo != "gptq" or c.calibration_samples > 0:
        return
    yield rule.violation(
        ("compress.int4_algo", "compress.calibration_samples"),
        "compress.int4_algo=gptq fits its rounding to calibration activations, but compress.calibration_samples=0",
        "set compress.calibration_samples=16 (sequences of the training text), or use compress.int4_algo=hqq "
        "or kquant (no data)",
    )


@rule("quant.int4_algo_only_int4", "warning")
def int4_algo_only_int4(rule, cfg, ctx):
    """compress.int4_algo chooses how int4 weights are rounded; at any other precision it is ignored."""
    c = cfg.compress
    if c.int4_algo == "rtn" or c.precision == "int4":
        return
    yield rule.violation(
        ("compress.int4_algo", "compress.precision"),
        f"compress.int4_algo={c.int4_algo} applies to int4 weights only; compress.precision={c.precision} ignores it",
        "use compress=int4, or remove compress.int4_algo",
    )


@rule("quant.int4_algo_asymmetric", "warning")
def int4_algo_asymmetric(rule, cfg, ctx):
    """compress.int4_algo=hqq, kquant or gptq writes zero points (asymmetric blocks) for the linear layers: compress.symmetric=true is ignored there, and a tied embedding is stored twice (sharing it needs symmetric lm_head weights). gptq: onnxruntime's symmetric GPTQ re-rounds its result onto another grid, so slmc runs it asymmetric."""
    c = cfg.compress
    if c.precision != "int4" or c.int4_algo not in ("hqq", "kquant", "gptq") or not c.symmetric:
        return
    yield rule.violation(
        ("compress.int4_algo", "compress.symmetric"),
        f"compress.int4_algo={c.int4_algo} writes asymmetric blocks for the linear layers (a zero point each"
        f"{', in float' if c.int4_algo == 'hqq' else ''}) whatever compress.symmetric says"
        + ("; onnxruntime's symmetric GPTQ re-rounds its own result onto another grid, undoing its error "
           "compensation" if c.int4_algo == "gptq" else ""),
        "set compress.symmetric=false to say so, or use compress.int4_algo=rtn for symmetric blocks",
    )


@rule("quant.int4_algo_cpu_speed", "warning")
def int4_algo_cpu_speed(rule, cfg, ctx):
    """compress.int4_algo=hqq keeps its zero points in float; ONNX Runtime's CPU MatMulNBits prepacks only uint8 zero points, so it dequantizes every weight on every call: on the CPU (and XNNPACK, which leaves MatMulNBits to the CPU EP) hqq bundles decode several times slower than fp32 (bench/results/int4-algos-2026-12-05-1409.md: 411 tok/s against rtn's 6,645 and fp32's 2,911). Not measured on the CUDA EP, where the rule says nothing."""
    c = cfg.compress
    if c.precision != "int4" or c.int4_algo != "hqq" or cfg.runtime.name != "ort" \
            or cfg.device.ort_execution_provider == CUDA_EP:
        return
    yield rule.violation(
        ("compress.int4_algo", "device.ort_execution_provider"),
        f"compress.int4_algo=hqq writes float zero points, which {cfg.device.ort_execution_provider}'s int4 "
        "MatMulNBits cannot prepack: it dequantizes every weight on every token, so the bundle decodes slower "
        "than an fp32 one (measured ~16x slower than rtn)",
        "use compress.int4_algo=kquant (data-free and asymmetric too; within 0.12% held-out perplexity of hqq "
        "in slmc's measurement) or rtn",
    )
