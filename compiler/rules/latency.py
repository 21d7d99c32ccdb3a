"""Latency rule: decode speed the memory bandwidth allows, against the requested target."""

from __future__ import annotations

from ..estimate import decode_tokens_per_s, fmt_bytes
from ._engine import rule
from ._facts import compress_option, estimate_block_size, kv_bytes, shipped_devices, usable_precisions
from .context import deployed_arch, ensure_context


def estimate_tps(cfg, arch, precision: str, bandwidth: float) -> tuple[float, float, int]:
    """Batch-1 decode upper bound at the average context (half of export.max_seq_len)."""
    c = cfg.compress
    return decode_tokens_per_s(
        arch, precision, bandwidth, max(1, cfg.export.max_seq_len // 2), block_size=estimate_block_size(cfg), symmetric=c.symmetric,
        kv_bytes=kv_bytes(cfg, precision),
    )


@rule("latency.meets_target", "warning")
def meets_target(rule, cfg, ctx):
    """The decode upper bound (device bandwidth / bytes read per token: weights at the deployed precision + KV cache at half of export.max_seq_len) reaches targets.min_decode_tokens_per_s."""
    target = cfg.targets.min_decode_tokens_per_s
    if target is None:
        return
    ctx = ensure_context(cfg, ctx)
    dep = deployed_arch(cfg, ctx)
    if dep.arch is None:
        return
    a, d, p = dep.arch, cfg.device, cfg.compress.precision
    tps, w, kv = estimate_tps(cfg, a, p, d.memory_bandwidth_gbps)
    if tps >= target:
        return
    fixes = []
    for q in usable_precisions(cfg):
        q_tps = estimate_tps(cfg, a, q, d.memory_bandwidth_gbps)[0]
        if q_tps >= target and q != p:
            fixes.append(f"compress={compress_option(q)} (≈{q_tps:,.0f} tok/s)")
            break
    faster = [
        (dev.memory_bandwidth_gbps, name) for name, dev in shipped_devices().items()
        if cfg.runtime.name in dev.runtimes and p in dev.precisions
        and estimate_tps(cfg, a, p, dev.memory_bandwidth_gbps)[0] >= target
    ]
    if faster:
        bw, name = min(faster)
        fixes.append(f"device={name} ({bw:g} GB/s)")
    fixes.append("a smaller model")
    yield rule.violation(
        ("targets.min_decode_tokens_per_s", "compress.precision", "device.memory_bandwidth_gbps"),
        f"estimated decode upper bound {tps:,.0f} tok/s at batch 1 ({fmt_bytes(w)} of {p} weights + "
        f"{fmt_bytes(kv)} KV cache read per token at {d.memory_bandwidth_gbps:g} GB/s) is below the target "
        f"{target:,.0f} tok/s",
        "use " + "; or ".join(fixes),
    )
