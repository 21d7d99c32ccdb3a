"""Plan: the ordered stages a config needs, what each consumes and produces, where it runs.

A plan is pure data computed from the typed config and the stage registry
(`stages.registry`): each registered stage that applies to the config, with its
inputs, outputs and cache key filled in. Building it checks that every input is
produced by an earlier stage (or is an external file the user named), so a
wiring mistake is caught before anything runs. Only a config without rule
errors is planned (`pipeline.check_and_plan` checks first).

plan.json is `Plan.to_dict()`: run_name, stages (name, runs_on, consumes,
produces, depends_on_config, description), external_inputs, rules_checked,
warnings, and provenance: each checkpoint the run reads (init.path, the teacher), resolved
to the local folder the stages load, its Hub commit sha and its family
(`stages.checkpoints`; a Hub id is resolved with its config and tokenizer files only), and
lineage: this run's bundle version and its parent run (`slmc.lineage`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from .errors import PlanError
from .layout import LAYOUT
from .schema import SlmcConfig
from .stages.base import MODEL, RunsOn, Stage
from .stages.checkpoints import ResolvedCheckpoint, resolve_checkpoints
from .stages.registry import STAGES


@dataclass(frozen=True)
class PlannedStage:
    """A registered stage as one config runs it: its paths and cache key filled in."""

    stage: Stage
    runs_on: RunsOn
    consumes: tuple[str, ...]
    produces: tuple[str, ...]
    depends_on_config: tuple[str, ...]
    """Config sections whose values change this stage's output (with its inputs: its cache key)."""
    description: str

    @property
    def name(self) -> str:
        return self.stage.name

    def to_dict(self) -> dict:
        return {"name": self.name, "runs_on": self.runs_on, "consumes": list(self.consumes),
                "produces": list(self.produces), "depends_on_config": list(self.depends_on_config),
                "description": self.description}


@dataclass(frozen=True)
class Plan:
    run_name: str
    stages: tuple[PlannedStage, ...]
    external_inputs: tuple[str, ...]
    rules_checked: tuple[str, ...] = ()
    warnings: tuple[dict, ...] = field(default_factory=tuple)
    checkpoints: tuple[ResolvedCheckpoint, ...] = ()
    """The checkpoints the run reads, resolved: what train.py loads and provenance records."""
    lineage: dict | None = None
    """This run's version and parent run, back to its first checkpoint (slmc.lineage)."""

    def stage(self, name: str) -> PlannedStage:
        return next(s for s in self.stages if s.name == name)

    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def checkpoint(self, key: str) -> ResolvedCheckpoint | None:
        return next((c for c in self.checkpoints if c.key == key), None)

    def provenance(self) -> dict:
        found = {"checkpoints": {c.key: c.to_dict() for c in self.checkpoints}}
        if self.lineage is not None:
            found["lineage"] = self.lineage
        return found

    def to_dict(self) -> dict:
        return {
            "run_name": self.run_name,
            "stages": [s.to_dict() for s in self.stages],
            "external_inputs": list(self.external_inputs),
            "rules_checked": list(self.rules_checked),
            "warnings": list(self.warnings),
            "provenance": self.provenance(),
        }


def _external_inputs(cfg: SlmcConfig) -> list[str]:
    found = list(cfg.data.train_files) + list(cfg.data.heldout_files)
    for value in (cfg.data.tokenizer, cfg.init.path, cfg.init.distill.teacher_path):
        if value:
            found.append(value)
    return found


def plan_stage(stage: Stage, cfg: SlmcConfig, model: str | None) -> PlannedStage:
    """`stage` for `cfg`; `model` is the ONNX model the deploy stages before it left (MODEL's value)."""
    consumes = []
    for item in stage.consumes(cfg):
        if item == MODEL:
            if model is None:
                raise PlanError(f"stage {stage.name!r} needs an ONNX model but no earlier stage writes one",
                                fix="this is a bug in slmc's stage registry; please report it")
            item = model
        consumes.append(item)
    return PlannedStage(stage, stage.runs_on(cfg), tuple(consumes), stage.outputs(cfg),
                        stage.config_sections(cfg), stage.describe(cfg))


def make_plan(cfg: SlmcConfig, run_name: str, rules_checked=(), warnings=(), *,
              stages: Sequence[Stage] = STAGES, checkpoints: Sequence[ResolvedCheckpoint] | None = None) -> Plan:
    """The ordered stages for `cfg`; raises PlanError if an input is never produced.

    `checkpoints` defaults to resolving the config's checkpoints (a Hub id: its cache snapshot)."""
    resolved = tuple(resolve_checkpoints(cfg) if checkpoints is None else checkpoints)
    external = _external_inputs(cfg)
    # A stage may consume a checkpoint as the folder it resolved to (a Hub id's snapshot).
    available = set(external) | {LAYOUT.train_script} | {c.folder for c in resolved}
    planned: list[PlannedStage] = []
    model: str | None = None
    for stage in stages:
        if not stage.applies(cfg):
            continue
        step = plan_stage(stage, cfg, model)
        missing = [item for item in step.consumes if item not in available]
        if missing:
            raise PlanError(f"stage {stage.name!r} needs {missing} but no earlier stage produces them",
                            fix="this is a bug in slmc's stage registry; please report it")
        available.update(step.produces)
        model = stage.model_out or model
        planned.append(step)
    from .lineage import lineage_record

    return Plan(run_name, tuple(planned), tuple(external), tuple(rules_checked),
                tuple(v.to_dict() for v in warnings), resolved, lineage_record(cfg, run_name, resolved))
