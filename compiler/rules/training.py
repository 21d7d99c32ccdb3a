"""Training rules: the training host runs the autocast precision; the schedule and the init make sense together; FSDP only for what train.py can shard."""

from __future__ import annotations

from ._engine import rule


def _trains(cfg) -> bool:
    return cfg.train.kind != "none" and cfg.train.max_steps > 0


@rule("train.precision_supported_by_host")
def precision_supported_by_host(rule, cfg, ctx):
    """train.precision (bf16/fp16 autocast) is one the training host runs (host.precisions); fp16 on a CPU host is an error."""
    p, h = cfg.train.precision, cfg.host
    if not _trains(cfg) or p in ("auto", "fp32") or p in h.precisions:
        return
    better = [q for q in ("bf16", "fp16") if q in h.precisions and q != p]
    fix = f"set train.precision={better[0]}" if better else "set train.precision=fp32"
    why = " (CPU autocast has no fast fp16 kernels and no loss scaling)" if h.accelerator == "cpu" and p == "fp16" else ""
    yield rule.violation(
        ("train.precision", "host.precisions"),
        f"train.precision={p} but the training host ({h.name}, {h.accelerator}) runs {', '.join(h.precisions)}{why}",
        f"{fix} (or train.precision=auto)",
    )


@rule("train.steps_cover_warmup", "warning")
def steps_cover_warmup(rule, cfg, ctx):
    """train.warmup_steps < train.max_steps, so the run reaches its peak learning rate and decays."""
    t = cfg.train
    if _trains(cfg) and t.warmup_steps >= t.max_steps:
        yield rule.violation(
            ("train.warmup_steps", "train.max_steps"),
            f"train.warmup_steps={t.warmup_steps} ≥ train.max_steps={t.max_steps}: the learning rate never reaches "
            f"train.lr={t.lr:g} and the cosine decay never runs",
            f"set train.warmup_steps={max(0, t.max_steps // 10)}",
        )


@rule("train.kind_matches_init")
def kind_matches_init(rule, cfg, ctx):
    """The training kind suits how the model starts: distillation trains the student; fine-tuning or LoRA needs trained weights (warning on init=scratch); exporting untrained weights is a warning."""
    kind, init = cfg.train.kind, cfg.init.kind
    idle = kind == "none" or cfg.train.max_steps == 0
    if init == "distill" and idle:
        yield rule.violation(
            ("train.kind", "init.kind"),
            "init=distill without training: the student is never trained against the teacher",
            "use train=pretrain (distillation loss) with train.max_steps > 0",
        )
    elif init == "scratch" and idle:
        yield rule.violation(
            ("train.kind", "init.kind"),
            "init=scratch without training exports random weights",
            "use train=pretrain, or init=pretrained to export a trained checkpoint",
            "warning",
        )
    elif init == "scratch" and kind in ("finetune", "lora"):
        yield rule.violation(
            ("train.kind", "init.kind"),
            f"train={kind} on init=scratch: there are no trained weights to adapt",
            "use train=pretrain, or init=pretrained init.path=...",
            "warning",
        )


# What the generated train.py cannot do with sharded weights, and why (rule train.parallel_supported).
_FSDP_UNSUPPORTED = {
    ("train.kind", "lora"): "train=lora merges peft adapters into whole weight matrices, which FSDP keeps sharded",
    ("train.kind", "qat"): "train=qat fake-quantizes weights through parametrizations that FSDP's sharded "
                           "parameters do not carry",
    ("init.kind", "distill"): "init=distill keeps a full, unsharded teacher in every process: the memory FSDP "
                              "saves goes to the teacher",
}


@rule("train.parallel_supported")
def parallel_supported(rule, cfg, ctx):
    """train.parallel=fsdp shards full-weight training only (init scratch/pretrained/prune with train pretrain/finetune): LoRA, QAT and distillation are refused; with one process fsdp has no effect (warning)."""
    if cfg.train.parallel != "fsdp" or not _trains(cfg):
        return
    values = {"train.kind": cfg.train.kind, "init.kind": cfg.init.kind}
    for (path, value), why in _FSDP_UNSUPPORTED.items():
        if values[path] == value:
            yield rule.violation(
                ("train.parallel", path),
                f"train.parallel=fsdp with {path}={value}: {why}",
                "set train.parallel=ddp (each process holds the whole model)",
            )
    if cfg.host.world_size == 1:
        yield rule.violation(
            ("train.parallel", "host.num_processes"),
            "train.parallel=fsdp with host.num_processes=1: one process trains the whole model plainly, "
            "nothing is sharded (FSDP applies only under torchrun with several processes)",
            "set host.num_processes to the number of GPUs (or processes) to shard over, or train.parallel=ddp",
            "warning",
        )
