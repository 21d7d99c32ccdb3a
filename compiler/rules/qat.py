"""QAT rule: quantization-aware training needs steps to train and a deployment it simulates."""

from __future__ import annotations

from ._engine import rule
from ._facts import compress_option

_FLOAT = ("fp32", "fp16", "bf16")


@rule("qat.requires_train_stage")
def requires_train_stage(rule, cfg, ctx):
    """train=qat trains (max_steps > 0) and deploys the precision its fake-quant simulates (train.qat.target); QAT deployed as float is wasted (warning)."""
    t, c = cfg.train, cfg.compress
    if t.kind != "qat":
        return
    if t.max_steps == 0:
        yield rule.violation(
            ("train.max_steps", "train.kind"),
            "train=qat with train.max_steps=0: no step runs, so the fake-quant observers never see data",
            "set train.max_steps=100 (or more), or drop QAT with train=none",
        )
    target = t.qat.target
    if c.precision == target:
        return
    option = compress_option(target)
    if c.precision in _FLOAT:
        yield rule.violation(
            ("compress.precision", "train.qat.target"),
            f"QAT simulates {target} but compress={c.name} deploys {c.precision}: the quantization-aware "
            "training is wasted",
            f"use compress={option}, or train=finetune",
            "warning",
        )
    else:
        yield rule.violation(
            ("compress.precision", "train.qat.target"),
            f"QAT trains for {target} rounding but compress={c.name} deploys {c.precision}, a different grid",
            f"use compress={option} (or a train.qat.target matching {c.precision}, where supported)",
        )
