"""Plan: the ordered stages a config needs, what each consumes and produces, where it runs.

A plan is pure data computed from the typed config; building it checks that
every input is produced by an earlier stage (or is an external file the user
named), so a wiring mistake is caught before anything runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from .errors import PlanError
from .layout import LAYOUT
from .schema import SlmcConfig

RunsOn = Literal["host", "target"]


@dataclass(frozen=True)
class Stage:
    """One step of the lifecycle."""

    name: str
    runs_on: RunsOn
    consumes: tuple[str, ...]
    produces: tuple[str, ...]
    depends_on_config: tuple[str, ...]
    """Config sections whose values change this stage's output (its cache key)."""
    description: str


@dataclass(frozen=True)
class Plan:
    run_name: str
    stages: tuple[Stage, ...]
    external_inputs: tuple[str, ...]
    rules_checked: tuple[str, ...] = ()
    warnings: tuple[dict, ...] = field(default_factory=tuple)

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def to_dict(self) -> dict:
        return {
            "run_name": self.run_name,
            "stages": [asdict(s) for s in self.stages],
            "external_inputs": list(self.external_inputs),
            "rules_checked": list(self.rules_checked),
            "warnings": list(self.warnings),
        }


def _external_inputs(cfg: SlmcConfig) -> list[str]:
    found = list(cfg.data.train_files) + list(cfg.data.heldout_files)
    for value in (cfg.data.tokenizer, cfg.init.path, cfg.init.distill.teacher_path):
        if value:
            found.append(value)
    return found


def _model_stages(cfg: SlmcConfig) -> list[Stage]:
    L = LAYOUT
    stages = [
        Stage("data", "host", tuple(cfg.data.train_files) + tuple(cfg.data.heldout_files),
              (L.train_text, L.heldout_text, L.data_info), ("data", "seed"),
              "gather training and held-out text"),
        Stage("tokenizer", "host", (L.train_text,) + ((cfg.data.tokenizer,) if cfg.data.tokenizer else ()),
              (L.tokenizer, L.tokenizer_config), ("data", "model.vocab_size", "export.max_seq_len"),
              "reuse the given tokenizer or train a byte-level BPE"),
    ]
    init_inputs: tuple[str, ...] = ()
    if cfg.init.kind == "prune":
        stages.append(Stage("prune", "host", (cfg.init.path or "?", L.tokenizer, L.train_text),
                            (L.init_checkpoint,), ("init",), "structured pruning by importance"))
        init_inputs = (L.init_checkpoint,)
    elif cfg.init.kind == "pretrained":
        init_inputs = (cfg.init.path or "?",)
    elif cfg.init.kind == "distill":
        init_inputs = (cfg.init.distill.teacher_path or "?",)
    stages.append(Stage(
        "train", "host", (L.train_script, L.train_text, L.heldout_text, L.tokenizer) + init_inputs,
        (L.final_checkpoint, L.metrics), ("model", "init", "train", "host", "seed"),
        f"run the generated train.py ({cfg.train.kind}, {cfg.train.max_steps} steps)",
    ))
    return stages


def _deploy_stages(cfg: SlmcConfig) -> list[Stage]:
    L = LAYOUT
    exported = f"{L.work}/export/model.onnx"
    stages = [Stage("export", "host", (L.final_checkpoint,), (exported,), ("export",),
                    "ONNX with KV cache; parity vs PyTorch")]
    current = exported
    if cfg.runtime.name == "tensorrt":
        prepared = f"{L.work}/tensorrt/model.onnx"
        stages.append(Stage("prepare_tensorrt", "host", (current,), (prepared,), ("runtime", "device"),
                            "standard ops only, constant-folded; parser op check"))
        current = prepared
    # ORT fusions run on the fp32 graph first: fused attention and a plain lm_head MatMul
    # (no longer a Transpose of the tied embedding) let int4/int8 quantize every weight.
    # An fp16 graph is left unfused: optimizing it on the CPU provider bakes in CPU-only casts.
    if cfg.runtime.name == "ort" and cfg.compress.precision != "fp16":
        optimized = f"{L.work}/optimize/model.onnx"
        stages.append(Stage("optimize", "host", (current,), (optimized,), ("runtime", "device"),
                            "fused attention (GroupQueryAttention) and norms for ONNX Runtime"))
        current = optimized
    if cfg.compress.precision != "fp32":
        compressed = f"{L.work}/compress/model.onnx"
        # block_size=auto picks among the device's int4 block sizes, so the device is part of the key
        tuned = cfg.compress.precision == "int4" and cfg.compress.block_size == "auto"
        sections = ("compress", "runtime") + (("device",) if tuned else ())
        stages.append(Stage("compress", "host", (current, L.heldout_text), (compressed,), sections,
                            f"{cfg.compress.precision} for {cfg.runtime.name}; perplexity gate"))
        current = compressed
    stages.append(Stage("package", "host", (current, L.tokenizer, L.tokenizer_config), (L.bundle,), ("generation", "export"),
                        "bundle, manifest with hashes, README; verified before it is published"))
    if cfg.runtime.name == "tensorrt":
        where: RunsOn = "host" if cfg.runtime.build_engine_on_host else "target"
        stages.append(Stage("build_engine", where, (L.bundle,), ("model.engine",), ("runtime",),
                            "TensorRT engine built where it runs (bundle/build_engine.sh)"))
    return stages


def make_plan(cfg: SlmcConfig, run_name: str, rules_checked=(), warnings=()) -> Plan:
    """The ordered stages for `cfg`; raises PlanError if an input is never produced."""
    stages = _model_stages(cfg) + _deploy_stages(cfg)
    external = _external_inputs(cfg)
    available = set(external) | {LAYOUT.train_script}
    for stage in stages:
        missing = [item for item in stage.consumes if item not in available]
        if missing:
            raise PlanError(f"stage {stage.name!r} needs {missing} but no earlier stage produces them",
                            fix="this is a bug in slmc's planner; please report it")
        available.update(stage.produces)
    return Plan(run_name, tuple(stages), tuple(external), tuple(rules_checked),
                tuple(v.to_dict() for v in warnings))
