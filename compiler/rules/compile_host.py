"""The compile host: can the machine running `slmc compile` hold the export, fusion and quantization?

A 0.5B checkpoint needs about 12.6 GiB of RAM to quantize to int8; a user finds that out
minutes into a compile unless the check says so. The peaks below are measured, not derived:
bench/results/stage-costs-2026-12-04.md (SmolLM2-135M and Qwen2.5-0.5B published shapes at
full depth, each stage in a fresh process), as peak RSS ÷ the fp32 weights' bytes. The
multipliers are the larger of the two shapes' (the smaller model's fixed overheads weigh more),
so the warning errs towards warning.
"""

from __future__ import annotations

from ..estimate import fmt_bytes, param_count
from ._engine import rule
from .context import deployed_arch, ensure_context

PEAK_OVER_FP32_WEIGHTS = {
    "export": 4.3,     # dynamo export + parity against PyTorch: 4.28 (135M), 3.36 (0.5B)
    "optimize": 7.8,   # ORT fusion passes + ORT's offline optimizer: 7.73, 4.82
    "int8": 7.0,       # onnxruntime's quantize_dynamic: 6.99, 6.86
    "int4": 3.6,       # MatMulNBits quantizer: 3.58, 3.33
}
"""Peak RSS of a compile stage ÷ (parameters × 4 bytes), per stage; see the module docstring."""


def compile_host_bytes() -> int:
    """RAM of the machine running the compile (the stages run here, whatever host.* says)."""
    import psutil

    return int(psutil.virtual_memory().total)


def compile_stages(cfg) -> list[str]:
    """The memory-heavy deploy stages this config runs on the compile host."""
    stages = ["export"]
    if cfg.runtime.name == "ort" and cfg.compress.precision != "fp16":
        stages.append("optimize")
    if cfg.compress.precision in ("int8", "int4"):
        stages.append(cfg.compress.precision)
    return stages


@rule("memory.fits_compile_host", "warning")
def fits_compile_host(rule, cfg, ctx):
    """The machine running the compile has the RAM its export, ORT fusion and quantization peak at (measured multiples of the fp32 weights; a warning, since only a run can tell exactly)."""
    ctx = ensure_context(cfg, ctx)
    dep = deployed_arch(cfg, ctx)
    if dep.arch is None:
        return
    weights = 4 * param_count(dep.arch)
    stage, need = max(((s, PEAK_OVER_FP32_WEIGHTS[s] * weights) for s in compile_stages(cfg)), key=lambda p: p[1])
    have = compile_host_bytes()
    if need <= have:
        return
    gib = -(-need // 2**30)  # rounded up: the printed amount must itself be enough
    yield rule.violation(
        (dep.source, "compress.precision"),
        f"the {stage} step of this compile peaks near {need / 2**30:.1f} GiB "
        f"({PEAK_OVER_FP32_WEIGHTS[stage]:g} × the {fmt_bytes(weights)} of fp32 weights, measured), "
        f"but this machine has {have / 2**30:.1f} GiB of RAM",
        f"compile on a machine with at least {gib:.0f} GiB of RAM"
        + ("; or compress=int4, whose quantizer peaks lower than int8's" if cfg.compress.precision == "int8" else ""),
    )
