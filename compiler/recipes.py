"""A recipe per method: which template parts make the generated train.py, and in what order.

train.py holds only the code its configuration runs (torchtune ships one recipe file per
method; slmc composes one from parts). The method (pretrain / full fine-tune / LoRA / QAT /
distill), the way processes share the model (one process, DDP, FSDP) and the tracker each
decide which parts are rendered (`templates/train/<part>.py.j2`) and which few lines inside
a shared part apply; the parts are rendered with one context and joined in reading order.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from .render import render_template
from .schema import SlmcConfig

PART_DIR = "train"

_TITLES = {
    "pretrain": "Pretrain a small causal language model from random weights",
    "finetune": "Fine-tune all weights of a causal language model",
    "lora": "Fine-tune a causal language model with LoRA adapters",
    "qat": "Quantization-aware training of a causal language model for int8",
    "distill": "Distill a teacher into a small causal language model",
    "none": "Save a causal language model untrained, with its held-out perplexity",
}


@dataclass(frozen=True)
class Recipe:
    """What one generated train.py does; every flag is a fact of the resolved config."""

    name: str                   # pretrain | finetune | lora | qat | distill | none, then -ddp / -fsdp
    title: str
    method: str                 # the name without the parallel suffix
    parallel: str               # single | ddp | fsdp
    loaded: bool                # weights loaded from a checkpoint (init=pretrained|prune), not built
    lora: bool
    qat: bool
    distill: bool
    distributed: bool           # written for torchrun (world size > 1 when compiled)
    ddp: bool
    fsdp: bool
    tracking: str               # none | tensorboard | mlflow
    nodes: int
    processes_per_node: int
    train_kinds: tuple[str, ...]  # the TRAIN['kind'] values this recipe implements
    init_kinds: tuple[str, ...]   # the INIT['kind'] values it implements

    @property
    def parts(self) -> tuple[str, ...]:
        """Template parts in reading order (each `templates/train/<part>.py.j2`)."""
        wanted = {
            "lora": self.lora, "distill": self.distill, "qat": self.qat, "parallel": self.distributed,
            "tracking": self.tracking != "none",
        }
        order = ("header", "config", "plumbing", "data", "model", "lora", "distill", "qat", "parallel",
                 "optimizer", "evaluate", "checkpoint", "tracking", "loop", "main")
        return tuple(part for part in order if wanted.get(part, True))


def _title(method: str, loaded: bool) -> str:
    if method == "pretrain" and loaded:
        return "Continue pretraining a causal language model from a checkpoint"
    return _TITLES[method]


def method_of(cfg: SlmcConfig) -> str:
    """The method a config trains with: the train kind, distill when a teacher is used (LoRA and QAT
    keep their own names: the teacher then is one more part of their recipe)."""
    if cfg.train.kind in ("lora", "qat"):
        return cfg.train.kind
    if cfg.init.kind == "distill":
        return "distill"
    return cfg.train.kind


def recipe_of(cfg: SlmcConfig) -> Recipe:
    """The recipe of a resolved config."""
    method = method_of(cfg)
    world = cfg.host.world_size
    parallel = "single" if world == 1 else cfg.train.parallel
    loaded = cfg.init.kind in ("pretrained", "prune")
    if cfg.train.kind in ("lora", "qat"):
        train_kinds: tuple[str, ...] = (cfg.train.kind,)
    else:  # one code path: only the starting weights differ
        train_kinds = ("pretrain", "finetune", "none")
    init_kinds = ("pretrained", "prune") if loaded else (cfg.init.kind,)
    return Recipe(
        name=method if parallel == "single" else f"{method}-{parallel}",
        title=_title(method, loaded) + ("" if parallel == "single" else f" ({parallel.upper()}, torchrun)"),
        method=method,
        parallel=parallel,
        loaded=loaded,
        lora=cfg.train.kind == "lora",
        qat=cfg.train.kind == "qat",
        distill=cfg.init.kind == "distill",
        distributed=parallel != "single",
        ddp=parallel == "ddp",
        fsdp=parallel == "fsdp",
        tracking=cfg.train.tracking,
        nodes=cfg.host.nodes,
        processes_per_node=cfg.host.num_processes,
        train_kinds=train_kinds,
        init_kinds=init_kinds,
    )


def compose(recipe: Recipe, context: dict[str, Any]) -> str:
    """The parts rendered with one context, joined by two blank lines (a part that renders empty
    is left out; runs of blank lines left by a part's skipped blocks shrink to two)."""
    ctx = {**context, "recipe": {**asdict(recipe), "parts": recipe.parts}}
    texts = [render_template(f"{PART_DIR}/{part}.py.j2", ctx).strip("\n") for part in recipe.parts]
    text = "\n\n\n".join(t for t in texts if t) + "\n"
    return re.sub(r"\n{4,}", "\n\n\n", text)
