"""Memory rules: the deployed model on the device, training on the training host, and the compile itself."""

from __future__ import annotations

import math
from typing import Any, Callable

from ..estimate import (
    MIB, Arch, DeployMemory, deploy_memory, fmt_bytes, forward_only_bytes, lora_params, param_count,
    training_memory, trt_build_bytes,
)
from ._engine import rule
from ._facts import (
    CUDA_EP, compress_option, estimate_block_size, kv_bytes, shipped_devices, usable_bytes, usable_precisions,
)
from .context import deployed_arch, ensure_context


def _deploy(cfg: Any, a: Arch, precision: str, seq: int, batch: int, device: Any = None) -> DeployMemory:
    """Deployed memory of `a` under this config's runtime, on `device` (default: the config's)."""
    device = device or cfg.device
    trt = cfg.runtime.name == "tensorrt"
    return deploy_memory(
        a, precision, seq, batch, on_cuda=trt or device.ort_execution_provider == CUDA_EP,
        workspace_mib=cfg.runtime.workspace_mib if trt else 0, tensorrt=trt, quantize_embedding=not trt,
        block_size=estimate_block_size(cfg), symmetric=cfg.compress.symmetric, kv_bytes=kv_bytes(cfg, precision),
    )


def deploy_need(cfg: Any, a: Arch, precision: str, seq: int, batch: int, device: Any = None) -> float:
    return _deploy(cfg, a, precision, seq, batch, device).total


def _largest(lo: int, hi: int, fits: Callable[[int], bool]) -> int | None:
    """Largest n in [lo, hi] with fits(n) (fits is monotone decreasing), or None."""
    if not fits(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def _device_fixes(cfg: Any, a: Arch, usable: float) -> list[str]:
    seq, batch, precision = cfg.export.max_seq_len, cfg.export.max_batch_size, cfg.compress.precision
    fixes = []
    smaller = [p for p in reversed(usable_precisions(cfg)) if p != precision]
    for p in smaller:
        need = deploy_need(cfg, a, p, seq, batch)
        if need <= usable:
            fixes.append(f"use compress={compress_option(p)} (needs {fmt_bytes(need)})")
            break
    best = _largest(2, seq - 1, lambda s: deploy_need(cfg, a, precision, s, batch) <= usable) if seq > 2 else None
    if best:
        fixes.append(f"set export.max_seq_len={best} (needs {fmt_bytes(deploy_need(cfg, a, precision, best, batch))})")
    if batch > 1 and deploy_need(cfg, a, precision, seq, 1) <= usable:
        fixes.append("set export.max_batch_size=1")
    spare = (cfg.runtime.workspace_mib - 256) * MIB if cfg.runtime.name == "tensorrt" else 0
    if spare > 0 and deploy_need(cfg, a, precision, seq, batch) - spare <= usable:
        fixes.append("set runtime.workspace_mib=256 (fewer TensorRT tactics)")
    others = [
        (usable_bytes(d), name) for name, d in shipped_devices().items()
        if name != cfg.device.name and cfg.runtime.name in d.runtimes and precision in d.precisions
        and deploy_need(cfg, a, precision, seq, batch, d) <= usable_bytes(d)
    ]
    if others:
        room, name = min(others)
        fixes.append(f"use device={name} ({fmt_bytes(room)} usable)")
    return fixes or ["use a smaller model (model=..., or init=prune with lower ratios)"]


@rule("memory.fits_device")
def fits_device(rule, cfg, ctx):
    """Weights at the deployed precision + KV cache at max_seq_len × max_batch_size + runtime overhead fit the device's usable memory."""
    ctx = ensure_context(cfg, ctx)
    dep = deployed_arch(cfg, ctx)
    if dep.arch is None:
        return
    a, d, c = dep.arch, cfg.device, cfg.compress
    m = _deploy(cfg, a, c.precision, cfg.export.max_seq_len, cfg.export.max_batch_size)
    usable = usable_bytes(d)
    if m.total <= usable:
        yield from _engine_build(rule, cfg, a, usable)
        return
    logits = cfg.export.max_batch_size * cfg.export.max_seq_len * a.vocab_size * 4
    workspace = f" and TensorRT workspace {cfg.runtime.workspace_mib} MiB" if cfg.runtime.name == "tensorrt" else ""
    yield rule.violation(
        (dep.source, "compress.precision", "export.max_seq_len", "export.max_batch_size", "device.memory_gb"),
        f"the deployed model needs {fmt_bytes(m.total)} (weights at {c.precision} {fmt_bytes(m.weights)} + KV cache "
        f"{fmt_bytes(m.kv_cache)} at {cfg.export.max_seq_len} tokens × batch {cfg.export.max_batch_size} + runtime "
        f"{fmt_bytes(m.overhead)}, of which fp32 logits of a full-length prefill {fmt_bytes(logits)}"
        f"{workspace}) but {d.name} has {fmt_bytes(usable)} usable "
        f"({d.memory_gb:g} GB × {d.usable_memory_fraction:g})",
        "; or ".join(_device_fixes(cfg, a, usable)),
    )


def _engine_build(rule, cfg: Any, a: Arch, usable: float):
    """A TensorRT engine built on the device must fit there too, while the model itself would."""
    d, r = cfg.device, cfg.runtime
    if r.name != "tensorrt" or d.engine_build != "target" or r.build_engine_on_host:
        return
    need = trt_build_bytes(a, cfg.compress.precision, r.workspace_mib)
    if need <= usable:
        return
    smaller = [p for p in usable_precisions(cfg) if trt_build_bytes(a, p, r.workspace_mib) <= usable]
    fixes = [f"use compress={compress_option(smaller[-1])}"] if smaller else []
    if r.workspace_mib > 256 and need - (r.workspace_mib - 256) * MIB <= usable:
        fixes.append("set runtime.workspace_mib=256")
    fixes.append("build on a larger device of the same GPU and TensorRT version")
    yield rule.violation(
        ("compress.precision", "runtime.workspace_mib", "device.memory_gb"),
        f"building the TensorRT engine on {d.name} needs {fmt_bytes(need)} (the parser's ONNX weights + the "
        f"engine's {cfg.compress.precision} weights + workspace {r.workspace_mib} MiB + CUDA context) but "
        f"{fmt_bytes(usable)} is usable",
        "; or ".join(fixes),
    )


def _act_bytes(cfg: Any) -> int:
    """Bytes per saved activation: 2 under bf16/fp16 autocast, else 4 ('auto' counts as fp32, the safe side)."""
    return 2 if cfg.train.precision in ("bf16", "fp16") else 4


def _shards(cfg: Any) -> int:
    """Processes FSDP shards the training state over (1: each process holds it whole). Only full
    training shards (rule train.parallel_supported refuses fsdp with LoRA, QAT or a teacher)."""
    t, h = cfg.train, cfg.host
    full = t.kind in ("pretrain", "finetune") and cfg.init.kind != "distill"
    return h.world_size if t.parallel == "fsdp" and full and h.world_size > 1 else 1  # every node's processes


def _train_need(cfg: Any, a: Arch, teacher: Arch | None, batch: int):
    t = cfg.train
    trainable = lora_params(a, t.lora.target_modules, t.lora.r) if t.kind == "lora" else None
    return training_memory(
        a, batch=batch, seq_len=t.seq_len, act_bytes=_act_bytes(cfg), math_attention=cfg.host.accelerator == "cpu",
        trainable=trainable, extra_weight_copies=1 if t.kind == "qat" else 0, teacher=teacher, shards=_shards(cfg),
    )


def _trains(cfg: Any) -> bool:
    return cfg.train.kind != "none" and cfg.train.max_steps > 0


Need = Callable[[Any, int, int], float]
"""need(cfg, batch, processes): the rule's peak bytes for a variant of the config."""


def _host_need(a: Arch, teacher: Arch | None, init_arch: Arch | None) -> Need:
    """The peak the rule compares with host memory: training × processes, or pruning's
    importance pass over the source model when that is larger."""

    def need(cfg: Any, batch: int, procs: int) -> float:
        total = _train_need(cfg, a, teacher, batch).total * procs if _trains(cfg) else 0
        if cfg.init.kind == "prune" and init_arch is not None:
            total = max(total, forward_only_bytes(init_arch, batch, cfg.train.seq_len))
        return total

    return need


def _fitting_batch(cfg: Any, need: Need, procs: int, avail: float) -> int | None:
    """The largest batch size that divides train.batch_size (so gradient accumulation keeps the
    tokens per step) and fits, or None. O(sqrt batch) candidates."""
    batch = cfg.train.batch_size
    divisors = sorted({d for k in range(1, int(batch ** 0.5) + 1) if batch % k == 0 for d in (k, batch // k)},
                      reverse=True)
    return next((b for b in divisors if need(cfg, b, procs) <= avail), None)


def _with_batch(cfg: Any, fit: int) -> str:
    accum = cfg.train.grad_accum_steps * cfg.train.batch_size // fit
    return f"train.batch_size={fit} train.grad_accum_steps={accum}"


def _training_fixes(cfg: Any, need: Need, procs: int, avail: float) -> list[str]:
    """Fixes that each fit on their own, by the rule's own estimate: a smaller batch with
    gradient accumulation; for a full fine-tune, LoRA (at this batch, or the largest smaller
    one that fits); one process instead of several. A LoRA still too big is named, not offered."""
    fixes, batch = [], cfg.train.batch_size
    fit = _fitting_batch(cfg, need, procs, avail)
    if fit is not None and fit < batch:
        fixes.append(f"{_with_batch(cfg, fit)} (same tokens per step)")
    if cfg.train.kind == "finetune":
        lora = cfg.model_copy(update={"train": cfg.train.model_copy(update={"kind": "lora"})})
        lora_fit = _fitting_batch(lora, need, procs, avail)
        if lora_fit is None:
            fixes.append(f"a smaller model (even LoRA at batch size 1 needs {fmt_bytes(need(lora, 1, procs))})")
        elif lora_fit == batch:
            fixes.append(f"train=lora (needs {fmt_bytes(need(lora, batch, procs))})")
        else:
            fixes.append(f"train=lora {_with_batch(cfg, lora_fit)} "
                         f"(needs {fmt_bytes(need(lora, lora_fit, procs))}, same tokens per step)")
    if procs > 1 and need(cfg, batch, 1) <= avail:
        fixes.append("host.num_processes=1")
    sharded = cfg.model_copy(update={"train": cfg.train.model_copy(update={"parallel": "fsdp"})})
    if _shards(cfg) == 1 and _shards(sharded) > 1 and need(sharded, batch, procs) <= avail:
        fixes.append(f"train.parallel=fsdp (needs {fmt_bytes(need(sharded, batch, procs))}: training state "
                     f"sharded over {cfg.host.world_size} processes)")
    return fixes


@rule("memory.fits_training_host")
def fits_training_host(rule, cfg, ctx):
    """Params + grads + AdamW state + activations (+ the teacher when distilling) fit the training host's memory."""
    ctx = ensure_context(cfg, ctx)
    dep = deployed_arch(cfg, ctx)
    if dep.arch is None:
        return
    a, h = dep.arch, cfg.host
    teacher = ctx.teacher_arch if cfg.init.kind == "distill" else None
    procs = h.num_processes if h.accelerator == "cpu" else 1  # cuda: one GPU of memory_gb per process
    avail = h.memory_gb * 1e9
    batch = cfg.train.batch_size
    parts = []
    if _trains(cfg):
        m = _train_need(cfg, a, teacher, batch)
        sharded = f"; FSDP keeps 1/{_shards(cfg)} of weights, grads and AdamW per process" if _shards(cfg) > 1 else ""
        parts.append(f"training {fmt_bytes(m.total)} per process ({m.breakdown()}{sharded})")
    if cfg.init.kind == "prune" and ctx.init_arch is not None:
        parts.append(f"pruning's importance pass over the source "
                     f"{fmt_bytes(forward_only_bytes(ctx.init_arch, batch, cfg.train.seq_len))}")
    need_of = _host_need(a, teacher, ctx.init_arch)
    need = need_of(cfg, batch, procs)
    if not parts or need <= avail:
        return
    scale = f" × {procs} processes" if procs > 1 else ""
    fixes = _training_fixes(cfg, need_of, procs, avail) if _trains(cfg) else []
    # Rounded up: the printed amount must itself be enough.
    fixes.append(f"a training host with more memory (host.memory_gb ≥ {math.ceil(need / 1e8) / 10:.1f})")
    yield rule.violation(
        ("host.memory_gb", "train.batch_size", "train.seq_len", dep.source),
        f"{' and '.join(parts)}{scale}: peak {fmt_bytes(need)} > host.memory_gb {h.memory_gb:g} GB",
        "; or ".join(fixes),
    )


# -- the compile host -----------------------------------------------------------

COMPILE_HOST_RESULTS = "bench/results/stage-costs-2026-12-04.md"
"""Where the measurements below come from (bench/stage_costs.py; its .json holds every number)."""

COMPILE_HOST_MEASURED: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    # compress option: ((fp32 weight bytes, peak RSS bytes) of SmolLM2-135M, the same of Qwen2.5-0.5B)
    # int4: the whole `slmc compile ... train=none compress=int4` (block_size=auto quantizes and
    # measures several int4 candidates in turn).
    "int4": ((538_060_032, 7_090_016_256), (1_976_131_072, 18_177_736_704)),
    # none: the same compiles' peak up to the end of optimize (export + fused graph), which is all a
    # compress=none compile adds before packaging.
    "none": ((538_060_032, 4_635_373_568), (1_976_131_072, 11_825_348_608)),
    # int8: the whole `slmc compile ... train=none compress=int8`.
    "int8": ((538_060_032, 5_956_177_920), (1_976_131_072, 19_613_155_328)),
}
# The lines through these points (compile_host_line), peak ≈ base + multiplier × fp32 weight bytes:
#   compress=none 1.95 GB + 5.00 ×, int8 0.85 GB + 9.50 ×, int4 2.94 GB + 7.71 ×
# (Qwen2.5-0.5B, 1.98 GB at fp32: 11.8, 19.6 and 18.2 GB; int4 tries several block sizes, so it is
# the heavier one at SmolLM2's size.)
"""Peak RSS of `slmc compile` for two published shapes at full depth (random weights), each
compile one process that keeps what its earlier stages allocated: so its peak is well above any
one stage's alone (Qwen2.5-0.5B int4: the compile 16.9 GiB, its worst stage alone 8.9 GiB).
Measured on a 24 GiB, 2-core machine; rerun bench/stage_costs.py after changing the export,
optimize or compress stages, and update these points and COMPILE_HOST_RESULTS."""


def compile_host_line(compress: str) -> tuple[float, float]:
    """(base bytes, × fp32 weight bytes): the line through the two measured compiles of `compress`."""
    (x0, y0), (x1, y1) = COMPILE_HOST_MEASURED[compress]
    slope = (y1 - y0) / (x1 - x0)
    return y0 - slope * x0, slope


def compile_host_bytes(a: Arch, precision: str, runtime: str) -> tuple[float, bool]:
    """(peak bytes of `slmc compile` on the compile host for `a`, whether that path was measured).

    = base + multiplier × fp32 weight bytes (parameters × 4: the export loads the checkpoint at
    fp32 whatever its dtype), per compress path, from COMPILE_HOST_MEASURED. Paths not measured
    (fp16/bf16/fp8, TensorRT's preparation and calibrated int8) take the largest measured line.
    """
    weights = 4 * param_count(a)
    compress = {"fp32": "none", "int8": "int8", "int4": "int4"}.get(precision)
    if runtime == "ort" and compress is not None:
        base, slope = compile_host_line(compress)
        return base + slope * weights, True
    return max(b + s * weights for b, s in map(compile_host_line, COMPILE_HOST_MEASURED)), False


def compile_host_memory(cfg: Any) -> tuple[float, str, str]:
    """(bytes, in words, config path) of the machine whose CPU runs export, optimize and compress.

    On a cpu host that is host.memory_gb. On a cuda host host.memory_gb is the GPU's, and the
    ONNX stages run on the CPU of the machine that runs `slmc compile`; this one, by default.
    """
    h = cfg.host
    if h.accelerator == "cpu":
        return h.memory_gb * 1e9, f"host.memory_gb {h.memory_gb:g} GB", "host.memory_gb"
    import psutil

    total = psutil.virtual_memory().total
    return float(total), f"this machine's {fmt_bytes(total)} of RAM (a cuda host's memory_gb is its GPU's)", \
        "host.accelerator"


@rule("memory.fits_compile_host", "warning")
def fits_compile_host(rule, cfg, ctx):
    """`slmc compile`'s export, fusion and quantization of the deployed architecture (fp32 weights × the multiplier measured for its compress path, bench/results/stage-costs-*) fit the compile host's memory (host.memory_gb; a cuda host's RAM)."""
    ctx = ensure_context(cfg, ctx)
    dep = deployed_arch(cfg, ctx)
    if dep.arch is None:
        return
    a, precision, runtime = dep.arch, cfg.compress.precision, cfg.runtime.name
    need, measured = compile_host_bytes(a, precision, runtime)
    room, room_text, room_path = compile_host_memory(cfg)
    if need <= room:
        return
    basis = (f"measured for compress={compress_option(precision)}" if measured
             else f"compress={compress_option(precision)} on {runtime} was not measured: the largest measured path")
    fixes = [f"use compress={compress_option(p)} (about {fmt_bytes(n)})" for p in ("int8", "int4")
             if p != precision and (n := compile_host_bytes(a, p, runtime)[0]) <= room][:1]
    more = math.ceil(need / 1e9)
    fixes.append(f"run the compile on a machine with at least {more} GB of memory"
                 + (f" (host.memory_gb={more})" if room_path == "host.memory_gb" else "")
                 + " and copy the bundle back: it does not depend on the machine that built it")
    yield rule.violation(
        (room_path, "compress.precision", dep.source),
        f"exporting, fusing and quantizing {a.num_hidden_layers} layers × hidden {a.hidden_size}, vocab "
        f"{a.vocab_size} ({param_count(a) / 1e6:.0f}M parameters, {fmt_bytes(4 * param_count(a))} at fp32) "
        f"peaks at about {fmt_bytes(need)} in `slmc compile` ({basis}, {COMPILE_HOST_RESULTS}), "
        f"more than {room_text}",
        "; or ".join(fixes),
    )
