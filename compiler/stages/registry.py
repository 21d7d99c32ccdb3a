"""The registry: every stage of the lifecycle, once, in the order a plan runs them.

To add a stage: write its result type (stages.results), its run function
`(cfg, run_dir, results) -> result` in a module of its own, and one `Stage` here
(what it consumes and produces, its cache key, when it applies). The plan, the
cache, execute and the report pick it up from this list.

Run functions are reached through a module import inside a small function, so that
importing the registry (the plan, `slmc report`) never imports torch or onnxruntime.
"""

from __future__ import annotations

from ..errors import PlanError
from ..layout import LAYOUT as L
from . import results as r
from .base import MODEL, Stage, StageResult

# -- the heavy modules, imported when a stage runs -----------------------------------------


def _prepare():
    from . import prepare

    return prepare


def _train():
    from . import train

    return train


def _prune():
    from . import prune

    return prune


def _deploy():
    from . import deploy

    return deploy


def _package():
    from . import package

    return package


def _draft():
    from . import draft

    return draft


def _gate():
    from . import gate

    return gate


def required(cfg, dotted: str) -> str:
    """A config path a stage reads as an input; a config without it cannot be planned."""
    value = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    if not value:
        raise PlanError(f"{dotted} is not set, and the plan needs it as an input", where=dotted,
                        fix=f"set {dotted}=...; `slmc check` lists every problem of a config before it is planned")
    return value


def _init_input(cfg) -> tuple[str, ...]:
    """The weights training starts from: the pruned checkpoint, a checkpoint, a teacher, or none."""
    kind = cfg.init.kind
    if kind == "prune":
        return (L.init_checkpoint,)
    if kind == "pretrained":
        return (required(cfg, "init.path"),)
    if kind == "distill":
        return (required(cfg, "init.distill.teacher_path"),)
    return ()


def _tokenizer_input(cfg) -> tuple[str, ...]:
    from .tokenizer import tokenizer_source

    source = tokenizer_source(cfg)
    return (L.train_text,) if source is None else (L.train_text, source[0])


def _compress_sections(cfg) -> tuple[str, ...]:
    # block_size=auto picks among the device's int4 block sizes, so the device is part of the key
    tuned = cfg.compress.precision == "int4" and cfg.compress.block_size == "auto"
    return ("compress", "runtime", "export.max_seq_len") + (("device",) if tuned else ())


def _ort_optimizes(cfg) -> bool:
    # ORT fusions run on the fp32 graph first: fused attention and a plain lm_head MatMul
    # (no longer a Transpose of the tied embedding) let int4/int8 quantize every weight.
    # An fp16 graph is left unfused: optimizing it on the CPU provider bakes in CPU-only casts.
    return cfg.runtime.name == "ort" and cfg.compress.precision != "fp16"


HELDOUT = (L.heldout_text, L.tokenizer)  # what every held-out evaluation reads

def _records(cfg) -> tuple[str, ...]:
    return () if cfg.data.format == "text" else (L.train_records, L.heldout_records)


def _data_inputs(cfg) -> tuple[str, ...]:
    # A Hub dataset id is consumed as itself: the stage cache keys it by the commit its snapshot
    # resolves to (cache.stage_key), so a dataset updated on the Hub is read again.
    return tuple(dict.fromkeys((*cfg.data.train_files, *cfg.data.heldout_files)))


DATA = Stage(
    "data", r.DataResult, run=lambda *a: _prepare().run_data(*a),
    describe=lambda cfg: "gather training and held-out text" if cfg.data.format == "text"
    else f"read {cfg.data.format} examples",
    consumes=_data_inputs,
    produces=lambda cfg: (L.train_text, L.heldout_text, L.data_info) + _records(cfg),
    config_sections=lambda cfg: ("data", "seed"),
)
TOKENIZER = Stage(
    "tokenizer", r.TokenizerResult, run=lambda *a: _prepare().run_tokenizer(*a),
    describe=lambda cfg: "reuse the given tokenizer or train a byte-level BPE",
    consumes=_tokenizer_input,
    produces=lambda cfg: (L.tokenizer, L.tokenizer_config),
    config_sections=lambda cfg: ("data", "model.vocab_size", "export.max_seq_len"),
)
TOKENIZE = Stage(
    "tokenize", r.TokenizeResult, run=lambda *a: _prepare().run_tokenize(*a),
    describe=lambda cfg: f"tokenize once into rows of {cfg.train.seq_len + 1} tokens with loss masks",
    consumes=lambda cfg: (L.train_text, L.heldout_text, L.tokenizer, L.tokenizer_config) + _records(cfg),
    produces=lambda cfg: (L.train_tokens, L.heldout_tokens),
    config_sections=lambda cfg: ("data", "train.seq_len"),
)
PRUNE = Stage(
    "prune", r.PruneResult, run=lambda *a: _prune().run_prune(*a),
    describe=lambda cfg: "structured pruning by importance",
    applies=lambda cfg: cfg.init.kind == "prune",
    consumes=lambda cfg: (required(cfg, "init.path"), L.tokenizer, L.train_text, L.heldout_text),
    produces=lambda cfg: (L.init_checkpoint,),
    config_sections=lambda cfg: ("init", "seed", "export.max_seq_len"),
)
TRAIN = Stage(
    "train", r.TrainResult, run=lambda *a: _train().run_train(*a),
    describe=lambda cfg: f"run the generated train.py ({cfg.train.kind}, {cfg.train.max_steps} steps)",
    consumes=lambda cfg: (L.train_script, L.train_tokens, L.heldout_tokens, L.tokenizer) + _init_input(cfg),
    produces=lambda cfg: (L.final_checkpoint, L.metrics),
    config_sections=lambda cfg: ("model", "init", "train", "host", "seed"),
)
EXPORT = Stage(
    "export", r.ExportResult, run=lambda *a: _deploy().run_export(*a),
    describe=lambda cfg: "ONNX with KV cache; parity vs PyTorch",
    consumes=lambda cfg: (L.final_checkpoint, *HELDOUT),
    model_out=L.export_model,
    config_sections=lambda cfg: ("export", "seed"),
)
PREPARE_TENSORRT = Stage(
    "prepare_tensorrt", r.PrepareTensorrtResult, run=lambda *a: _deploy().run_prepare_tensorrt(*a),
    describe=lambda cfg: "standard ops only, constant-folded; parser op check",
    applies=lambda cfg: cfg.runtime.name == "tensorrt",
    consumes=lambda cfg: (MODEL,),
    model_out=L.tensorrt_model,
    config_sections=lambda cfg: ("runtime", "device"),
)
OPTIMIZE = Stage(
    "optimize", r.OptimizeResult, run=lambda *a: _deploy().run_optimize(*a),
    describe=lambda cfg: "fused attention (GroupQueryAttention) and norms for ONNX Runtime",
    applies=_ort_optimizes,
    consumes=lambda cfg: (MODEL, *HELDOUT),
    model_out=L.optimized_model,
    config_sections=lambda cfg: ("runtime", "device", "export.max_seq_len"),
)
def _gptq(cfg) -> bool:
    return cfg.compress.precision == "int4" and cfg.compress.int4_algo == "gptq"


def _compress_what(cfg) -> str:
    """The precision, and the int4 algorithm where it is not the default."""
    c = cfg.compress
    return f"{c.precision} ({c.int4_algo})" if c.precision == "int4" and c.int4_algo != "rtn" else c.precision


COMPRESS = Stage(
    "compress", r.CompressResult, run=lambda *a: _deploy().run_compress(*a),
    describe=lambda cfg: f"{_compress_what(cfg)} for {cfg.runtime.name}; perplexity gate",
    applies=lambda cfg: cfg.compress.precision != "fp32",
    # gptq calibrates on the training text (held-out text judges the result)
    consumes=lambda cfg: (MODEL, *HELDOUT) + ((L.train_text,) if _gptq(cfg) else ()),
    model_out=L.compressed_model,
    config_sections=_compress_sections,
)
DRAFT = Stage(
    "draft", r.DraftResult, run=lambda *a: _draft().run_draft(*a),
    describe=lambda cfg: f"compile a draft decoder ({cfg.draft.method}) inside this run for speculative decoding",
    applies=lambda cfg: cfg.draft.method != "none",
    consumes=lambda cfg: (L.final_checkpoint, L.tokenizer) + ((cfg.draft.path,) if cfg.draft.path else ()),
    produces=lambda cfg: ("draft/bundle",),
    config_sections=lambda cfg: ("draft", "data", "device", "runtime", "compress", "export", "seed"),
    cacheable=False,  # a compile of its own, whose stages use the stage cache
)
PACKAGE = Stage(
    "package", r.PackageResult, run=lambda *a: _package().run_package(*a),
    describe=lambda cfg: "bundle, manifest with hashes, README; verified before it is published",
    consumes=lambda cfg: (MODEL, L.tokenizer, L.tokenizer_config) + (("draft/bundle",) if DRAFT.applies(cfg) else ()),
    produces=lambda cfg: (L.bundle,),
    config_sections=lambda cfg: ("generation", "export"),
    cacheable=False,  # it stamps a creation time, and it is cheap
)
GATE = Stage(
    "gate", r.GateResult, run=lambda *a: _gate().run_gate(*a),
    describe=lambda cfg: "measure the bundle and targets.baseline side by side; fail on a regression",
    applies=lambda cfg: bool(cfg.targets.baseline),
    consumes=lambda cfg: (L.bundle, L.heldout_text),
    produces=lambda cfg: (),
    config_sections=lambda cfg: ("targets",),
    cacheable=False,  # a measurement of this machine now, against a folder outside the run
)
BUILD_ENGINE = Stage(
    "build_engine", r.TargetResult, run=None,
    describe=lambda cfg: "TensorRT engine built where it runs (bundle/build_engine.sh)",
    applies=lambda cfg: cfg.runtime.name == "tensorrt",
    runs_on=lambda cfg: "host" if cfg.runtime.build_engine_on_host else "target",
    consumes=lambda cfg: (L.bundle,),
    produces=lambda cfg: ("model.engine",),
    config_sections=lambda cfg: ("runtime",),
    cacheable=False,
)

STAGES: tuple[Stage, ...] = (DATA, TOKENIZER, TOKENIZE, PRUNE, TRAIN, EXPORT, PREPARE_TENSORRT, OPTIMIZE, COMPRESS,
                             DRAFT, PACKAGE, GATE, BUILD_ENGINE)
BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}


def result_type(name: str) -> type[StageResult]:
    return BY_NAME[name].result


def evaluation_labels() -> dict[str, str]:
    """Every held-out evaluation key with its report label, in lifecycle order."""
    return {key: label for stage in STAGES for key, label in stage.result.EVALUATIONS.items()}
