"""What a stage is: its definition (`Stage`), its typed result, and the results of one run.

A `Stage` says everything the rest of slmc needs to know about one step of the
lifecycle: when it applies to a config, what it consumes and produces (the plan
checks the wiring), which config sections change its output (its cache key), the
result type it returns and the function that runs it. The plan, the cache,
execute, the report and the stage records all read these objects; the registry
(`stages.registry`) holds one per stage.

This module is light on purpose (no torch, onnxruntime or numpy): the plan and the
report import it, and a stage's heavy modules are imported only when it runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Generic, Iterator, Literal, TypeVar

if TYPE_CHECKING:
    from ..schema import SlmcConfig

RunsOn = Literal["host", "target"]
HELDOUT_EVAL_TOKENS = 8192
"""Every held-out evaluation reads the first this-many held-out tokens..."""
EVAL_WINDOW = 128
"""...in teacher-forced windows of this many tokens (at most export.max_seq_len)."""
MODEL = "<model>"
"""A placeholder in `Stage.consumes`: the ONNX model the latest earlier deploy stage wrote."""


@dataclass(frozen=True)
class Evaluation:
    """One held-out perplexity a stage measured (all on the same tokens and window)."""

    key: str                 # its name in the report and the manifest: "checkpoint", "export", ...
    ppl: float | None
    model: str | None        # run-relative path of the model measured
    measured_with: str       # "torch" or "onnxruntime"
    record_as: str | None    # the stage name of its metrics.jsonl record; None: part of another record
    extra: dict = field(default_factory=dict)


@dataclass(kw_only=True)
class StageResult:
    """What a stage returns; JSON-ready (the stage cache stores `to_dict()`)."""

    seconds: float | None = None  # wall time of the run that produced it (set by execute)
    cached: bool = False          # restored from the stage cache in this execution

    EVALUATIONS: ClassVar[dict[str, str]] = {}
    """Keys of the evaluations this result can carry, with their report labels, in lifecycle order."""

    def figure(self) -> str:
        """The stage's key figure, one line for the report's stage table."""
        return ""

    def evaluations(self) -> list[Evaluation]:
        return []

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """The result a stage cache entry holds (keys this version does not know are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(kw_only=True)
class ModelResult(StageResult):
    """A result of a stage that wrote an ONNX model: the input of the next deploy stage."""

    onnx: str  # run-relative path (results and cache entries must not depend on where the run folder is)


R = TypeVar("R", bound=StageResult)
Runner = Callable[["SlmcConfig", Path, "Results"], R]


def _always(cfg: SlmcConfig) -> bool:
    return True


def _on_host(cfg: SlmcConfig) -> RunsOn:
    return "host"


@dataclass(frozen=True)
class Stage(Generic[R]):
    """One step of the lifecycle, as the plan, the cache, execute and the report see it."""

    name: str
    result: type[R]
    run: Runner | None
    """Computes the stage in the run folder; None when it never runs on the host (a TensorRT engine)."""
    describe: Callable[[SlmcConfig], str]
    consumes: Callable[[SlmcConfig], tuple[str, ...]]
    """Run-relative paths of earlier outputs, the user's files, and MODEL for the current ONNX model."""
    produces: Callable[[SlmcConfig], tuple[str, ...]] | None = None
    """Run-relative outputs; None: just `model_out`."""
    model_out: str | None = None
    """The ONNX model it writes, which becomes the current model for the stages after it."""
    config_sections: Callable[[SlmcConfig], tuple[str, ...]] = lambda cfg: ()
    """Config sections (dotted) whose values change its output: with its inputs' hashes, its cache key."""
    applies: Callable[[SlmcConfig], bool] = _always
    runs_on: Callable[[SlmcConfig], RunsOn] = _on_host
    cacheable: bool = True

    def outputs(self, cfg: SlmcConfig) -> tuple[str, ...]:
        if self.produces is not None:
            return self.produces(cfg)
        return (self.model_out,) if self.model_out else ()


class Results:
    """The typed results of the stages that ran, in the order they ran.

    `model` is the ONNX model the latest deploy stage wrote (run-relative): the input of the next.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, StageResult] = {}
        self.model: str | None = None

    def add(self, name: str, result: StageResult) -> None:
        self._by_name[name] = result
        if isinstance(result, ModelResult):
            self.model = result.onnx

    def get(self, stage: Stage[R] | str) -> R | None:
        return self._by_name.get(stage if isinstance(stage, str) else stage.name)  # type: ignore[return-value]

    def __getitem__(self, stage: Stage[R] | str) -> R:
        found = self.get(stage)
        if found is None:
            raise KeyError(stage if isinstance(stage, str) else stage.name)
        return found

    def __contains__(self, stage: object) -> bool:
        return (stage if isinstance(stage, str) else getattr(stage, "name", None)) in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def items(self) -> list[tuple[str, StageResult]]:
        return list(self._by_name.items())

    def values(self) -> list[StageResult]:
        return list(self._by_name.values())

    def model_path(self, run_dir: Path) -> Path:
        """The current ONNX model in the run folder; a StageError when no deploy stage ran yet."""
        if self.model is None:
            from ..errors import StageError

            raise StageError("no exported model yet", fix="the export stage must run before this one")
        return Path(run_dir) / self.model

    def latest_heldout_ppl(self) -> float | None:
        """The held-out perplexity of the latest stage that measured one (a deploy stage's input model)."""
        for result in reversed(self.values()):
            found = [e.ppl for e in result.evaluations() if e.ppl is not None]
            if found:
                return found[-1]
        return None

    def evaluations(self) -> list[Evaluation]:
        return [e for result in self.values() for e in result.evaluations()]

    def seconds_ran(self) -> float:
        """Time spent by the stages that ran now (a cached stage cost nothing)."""
        return sum(r.seconds or 0.0 for r in self.values() if not r.cached)

    def to_dict(self) -> dict[str, dict]:
        return {name: result.to_dict() for name, result in self._by_name.items()}

    def __repr__(self) -> str:
        return f"Results({', '.join(self._by_name)})"
