"""The typed result of each stage: what it measured, its key figure, its held-out evaluations.

Nested reports that come from the ONNX tools (export's I/O and KV layout, a quantizer's
report) stay JSON data: the manifest and the report place them as they are. Everything
a later stage, the report or the metrics records read is a typed field here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..estimate import fmt_bytes
from ..layout import LAYOUT
from .base import Evaluation, ModelResult, StageResult

# -- formatting shared by the figures, the report and the sweep report -----------------


def fmt_ppl(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.1f}" if value >= 1000 else f"{value:.3f}"


def fmt_change(ratio: float) -> str:
    """A relative change as +1.23% (a change below 0.005% prints as +0.00%, never -0.00%)."""
    change = round(ratio - 1.0, 4)
    return f"{change if change else 0.0:+.2%}"


def compression(rep: dict) -> str:
    """What compress did to the model file; a TensorRT builder flag leaves the ONNX as it is."""
    before, after, fmt = rep.get("bytes_before", 0), rep.get("bytes_after", 0), rep.get("format", "?")
    if fmt == "builder-flag":
        return f"TensorRT builder flag: the ONNX model stays {fmt_bytes(after)}; the engine built on the device casts it"
    algo = rep.get("int4_algo") or rep.get("algo")  # the manifest's key, the stage report's key
    if algo:
        fmt = f"{fmt} ({algo})"
    return f"{fmt}: model {fmt_bytes(before)} → {fmt_bytes(after)} (×{before / max(after, 1):.2f} smaller)"


# -- one result per stage ----------------------------------------------------------------


@dataclass(kw_only=True)
class DataResult(StageResult):
    files: dict[str, str]  # run-relative path -> create / identical / overwrite
    train_chars: int
    heldout_chars: int
    train_sha256: str
    format: str = "text"                   # data.format
    train_examples: int | None = None      # chat/instruction: conversations read
    heldout_examples: int | None = None
    hub_revisions: dict[str, str] = field(default_factory=dict)  # Hub dataset id as configured -> commit read

    def figure(self) -> str:
        if self.train_examples is not None:
            return f"{self.format}: {self.train_examples:,} training / {self.heldout_examples:,} held-out examples"
        return f"{self.train_chars:,} training / {self.heldout_chars:,} held-out characters"


@dataclass(kw_only=True)
class TokenizerResult(StageResult):
    files: dict[str, str]
    source: str      # the tokenizer.json reused, or "trained (byte-level BPE)"
    vocab_size: int
    chat_template: str | None = None  # catalogue name or "checkpoint"; written into tokenizer_config.json

    def figure(self) -> str:
        chat = f"; chat template {self.chat_template}" if self.chat_template else ""
        return f"vocabulary {self.vocab_size:,}; {self.source}{chat}"


@dataclass(kw_only=True)
class TokenizeResult(StageResult):
    """Rows of token ids with loss and attention masks (stages.tokenize); counts of what was cut."""

    files: dict[str, str]
    format: str
    row_len: int             # train.seq_len + 1
    train_rows: int
    heldout_rows: int
    train_targets: int       # tokens trained on (ones in loss_mask)
    examples: int            # documents (text) or examples (chat/instruction) tokenized, both splits
    truncated: int = 0       # examples cut to data.max_length (overflow=truncate)
    dropped: int = 0         # examples longer than data.max_length dropped (overflow=drop)
    rejected: int = 0        # examples with no target token left (nothing to train on)
    padding: int = 0         # padding tokens in the rows (attention_mask 0)

    def figure(self) -> str:
        cut = "" if self.format == "text" else (f"; {self.truncated:,} truncated, {self.dropped:,} dropped, "
                                                 f"{self.rejected:,} rejected, {self.padding:,} padding tokens")
        return (f"{self.train_rows:,} training / {self.heldout_rows:,} held-out rows of {self.row_len} tokens; "
                f"{self.train_targets:,} training targets{cut}")


@dataclass(kw_only=True)
class PruneReport:
    """What pruning did to the model (stages.prune.prune_model)."""

    importance: str
    calibration_tokens: int
    params_before: int
    params_after: int
    kept_layers: list[int]
    dropped_layers: list[int]
    kv_groups_kept: list[list[int]]  # per kept layer, in the pruned model's order
    kv_heads: tuple[int, int]        # (before, after) per layer
    mlp_width: tuple[int, int]       # (before, after)
    layer_importance: list[float]    # per source layer; the lowest were dropped
    arch: str                        # the pruned shapes in words


@dataclass(kw_only=True)
class PruneResult(StageResult, PruneReport):
    source: str      # the checkpoint folder pruned
    checkpoint: str  # the pruned checkpoint (absolute path)
    heldout_ppl_before: float | None
    heldout_ppl_after: float | None

    EVALUATIONS = {"prune_before": "source model (before pruning)", "prune_after": "pruned model (before training)"}

    def figure(self) -> str:
        return f"{self.params_before:,} → {self.params_after:,} parameters ({self.arch})"

    def evaluations(self) -> list[Evaluation]:
        before = None if self.heldout_ppl_before is None else round(float(self.heldout_ppl_before), 4)
        return [Evaluation("prune_before", self.heldout_ppl_before, self.source, "torch", None),
                Evaluation("prune_after", self.heldout_ppl_after, LAYOUT.init_checkpoint, "torch", "prune",
                           {"heldout_ppl_before": before})]


@dataclass(kw_only=True)
class TrainResult(StageResult):
    command: str
    first_loss: float | None
    last_loss: float | None
    final_eval_ppl: float | None  # train.py's own evaluation (not the stage evaluation set)

    def figure(self) -> str:
        if self.first_loss is None:
            return "no training steps"
        text = f"loss {self.first_loss:.3f} → {self.last_loss:.3f}"
        return text + (f"; eval perplexity {fmt_ppl(self.final_eval_ppl)}" if self.final_eval_ppl else "")


@dataclass(kw_only=True)
class DeployResult(ModelResult):
    """A deploy stage's result: an ONNX model, and when that model is the one the bundle ships, its
    measurement against the fp32 checkpoint (stages.shipped_parity; the manifest's `metrics.parity`)."""

    shipped: dict[str, Any] | None = None


@dataclass(kw_only=True)
class ExportResult(DeployResult):
    checkpoint_ppl: float | None
    heldout_ppl: float | None
    heldout_eval_tokens: int
    exporter: str
    opset: int
    nodes: int
    export_seconds: float | None
    io: dict[str, Any]        # the bundle's I/O contract (names, dtypes, shapes)
    kv_cache: dict[str, Any]  # KV layout: layers, heads, head_dim, name patterns, dtype
    model: dict[str, Any]     # architecture summary of the checkpoint exported
    parity: dict[str, Any]    # the fp32 export vs PyTorch: cases, greedy_identical, ok, tolerance
    fallback_reason: str | None = None

    EVALUATIONS = {"checkpoint": "checkpoint (PyTorch, after training)", "export": "export (ONNX, fp32)"}

    def figure(self) -> str:
        return (f"{self.nodes} nodes, opset {self.opset} ({self.exporter}); "
                f"parity {'ok' if self.parity.get('ok') else 'FAILED'}")

    def evaluations(self) -> list[Evaluation]:
        return [Evaluation("checkpoint", self.checkpoint_ppl, LAYOUT.final_checkpoint, "torch", "train"),
                Evaluation("export", self.heldout_ppl, self.onnx, "onnxruntime", "export")]


@dataclass(kw_only=True)
class PrepareTensorrtResult(DeployResult):
    report: dict[str, Any]

    def figure(self) -> str:
        return (f"{self.report.get('nodes_before', '?')} → {self.report.get('nodes_after', '?')} nodes, "
                "parser op check passed")


@dataclass(kw_only=True)
class OptimizeResult(DeployResult):
    report: dict[str, Any]
    heldout_ppl: float | None
    kv_share_buffer: bool  # fused for one shared KV buffer (GroupQueryAttention): ORT GenAI's fast mode

    EVALUATIONS = {"optimize": "optimize (fused ONNX Runtime graph)"}

    def figure(self) -> str:
        fused = ", ".join(f"{op} ×{n}" for op, n in sorted(self.report.get("transformer_fusions", {}).items()) if n)
        return (f"{self.report.get('nodes_before', '?')} → {self.report.get('nodes_after', '?')} nodes"
                + (f"; fused {fused}" if fused else ""))

    def evaluations(self) -> list[Evaluation]:
        return [Evaluation("optimize", self.heldout_ppl, self.onnx, "onnxruntime", "optimize")]


@dataclass(kw_only=True)
class CompressResult(DeployResult):
    report: dict[str, Any]  # format, bytes_before, bytes_after, block_size, ...
    heldout_ppl: float | None
    ppl_increase: float | None
    block_size_trials: list[dict] = field(default_factory=list)  # compress.block_size=auto: each candidate

    EVALUATIONS = {"compress": "compress ({precision})"}

    @property
    def builder_flag(self) -> bool:
        """TensorRT fp16/bf16: a flag for the engine build; the ONNX graph is unchanged."""
        return self.report.get("format") == "builder-flag"

    def figure(self) -> str:
        text = compression(self.report)
        if self.report.get("block_size"):
            text += f", block {self.report['block_size']}"
        if self.block_size_trials:  # block_size=auto: what each candidate cost, so the choice can be checked
            tried = ", ".join(f"{t['block_size']}: {fmt_ppl(t['heldout_ppl'])}" for t in self.block_size_trials)
            text += f" (auto; perplexity by block {tried})"
        return text + (f"; perplexity {fmt_change(1 + self.ppl_increase)}" if self.ppl_increase is not None else "")

    def evaluations(self) -> list[Evaluation]:
        # A builder flag measures nothing new (the graph is the previous one): no metrics record.
        return [Evaluation("compress", self.heldout_ppl, self.onnx, "onnxruntime",
                           None if self.builder_flag else "compress")]


@dataclass(kw_only=True)
class DraftResult(StageResult):
    """The draft decoder compiled inside this run (stages.draft); the package stage ships its bundle."""

    method: str                   # draft.method
    run: str                      # run-relative folder of the draft's own run
    bundle: str                   # run-relative folder of the draft's bundle
    parameters: int
    num_hidden_layers: int
    target_num_hidden_layers: int
    heldout_ppl: float | None     # the draft bundle's held-out perplexity (its last stage's)

    EVALUATIONS = {"draft": "draft decoder (speculative decoding)"}

    def figure(self) -> str:
        return (f"{self.method}: {self.num_hidden_layers} of the target's {self.target_num_hidden_layers} layers, "
                f"{self.parameters:,} parameters; held-out perplexity {fmt_ppl(self.heldout_ppl)}")

    def evaluations(self) -> list[Evaluation]:
        return [Evaluation("draft", self.heldout_ppl, f"{self.bundle}/model.onnx", "onnxruntime", "draft")]


@dataclass(kw_only=True)
class PackageResult(StageResult):
    bundle: str             # run-relative bundle folder
    bytes: int              # of the files the manifest hashes
    files: dict[str, int]   # file name -> bytes
    tasks: dict[str, Any] | None = None  # eval.tasks: stages.task_eval.measure (checkpoint, bundle, drop)

    def figure(self) -> str:
        text = f"bundle {fmt_bytes(self.bytes)} in {len(self.files)} file(s)"
        if self.tasks:
            text += (f"; task accuracy {self.tasks['bundle']['accuracy']:.1%} "
                     f"(checkpoint {self.tasks['checkpoint']['accuracy']:.1%})")
        return text


@dataclass(kw_only=True)
class TargetResult(StageResult):
    """A stage that runs on the device (the TensorRT engine build): nothing is computed here."""


@dataclass(kw_only=True)
class GateResult(StageResult):
    """The regression gate's verdict against targets.baseline (compare.gate; the table is in the manifest)."""

    passed: bool
    baseline: str                      # the baseline bundle folder
    failures: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def figure(self) -> str:
        return "passed" if self.passed else f"FAILED: {'; '.join(self.failures)}"
