"""Typed, frozen schema: one model per config group, closed sets as Literal.

Every field is documented where it is declared (the docstring under it;
pydantic's `use_attribute_docstrings` turns it into the field's description);
`slmc explain` and error messages read those docs. Unknown keys are errors
(`extra="forbid"`), so a typo fails with its full key path instead of being
silently ignored.

This file is the one place defaults are stated: `schema_defaults()` hands them
to Hydra as the first entry of conf/config.yaml's defaults list, and the YAML
option files hold only what an option changes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

_TRT_VERSION = re.compile(r"[0-9]{1,3}(\.[0-9]{1,4}){1,3}")

Precision = Literal["fp32", "fp16", "bf16", "int8", "int4", "fp8"]
RuntimeName = Literal["ort", "tensorrt"]


class Section(BaseModel):
    """Base of every config section: frozen, closed, documented.

    Validators are built on first use (`defer_build`): a cold `slmc check` pays only for
    the sections it validates.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True, strict=False, allow_inf_nan=False,
                              use_attribute_docstrings=True)


class HostConfig(Section):
    """The machine that runs training (not the deployment target)."""

    name: str = "local"
    """A label for the training host, recorded in provenance."""
    accelerator: Literal["cpu", "cuda"] = "cpu"
    """What the training loop runs on."""
    memory_gb: float = Field(24.0, gt=0)
    """Memory available to training: host RAM for cpu, GPU memory for cuda."""
    precisions: list[Literal["fp32", "fp16", "bf16"]] = ["fp32", "bf16"]
    """Autocast precisions the host runs well (CPU: fp32, bf16; Ampere+: fp16, bf16)."""
    num_processes: int = Field(1, ge=1, le=1024)
    """Processes per node when launched with torchrun (data parallel)."""
    nodes: int = Field(1, ge=1, le=1024)
    """Machines training together: torchrun on each, one c10d rendezvous (launch_slurm.sh in the run folder
    when > 1). World size = nodes x num_processes."""
    gpus_per_node: int | None = Field(None, ge=1, le=1024)
    """GPUs per node, one process each: sets num_processes when that is left at 1 (else the two must agree);
    null: num_processes alone decides."""

    @model_validator(mode="before")
    @classmethod
    def _processes_from_gpus(cls, data: Any) -> Any:
        # gpus_per_node is the cluster's word for num_processes (one process per GPU): old configs keep
        # num_processes; a new one may say either, and both only when they agree.
        if isinstance(data, dict) and data.get("gpus_per_node") is not None:
            gpus, procs = data["gpus_per_node"], data.get("num_processes", 1)
            if procs in (None, 1):
                data = {**data, "num_processes": gpus}
            elif procs != gpus:
                raise ValueError(f"host.gpus_per_node={gpus} and host.num_processes={procs} disagree: "
                                 "set one of them (one process per GPU)")
        return data

    @property
    def world_size(self) -> int:
        """Training processes in all: nodes x processes per node."""
        return self.nodes * self.num_processes


class DeviceConfig(Section):
    """Where the model must run: facts about the deployment target (docs/architecture.md, "Device profiles")."""

    name: str
    """Profile name (the config group option)."""
    description: str
    """One line for people."""
    kind: Literal["cpu", "gpu", "jetson", "mobile"]
    """Device family; drives defaults and the latency model."""
    arch: Literal["x86_64", "aarch64"]
    """CPU architecture of the target (what `platform.machine()` reports there)."""
    isa: str
    """Instruction sets / compute capability in words, e.g. 'AVX2, AVX-512 VNNI' or 'sm87'."""
    compute_capability: str | None = None
    """CUDA compute capability (e.g. '8.7'); null for devices without an NVIDIA GPU."""
    memory_gb: float = Field(gt=0)
    """Total device memory in GB (shared CPU+GPU on Jetson)."""
    usable_memory_fraction: float = Field(gt=0, le=1)
    """Share of memory the model may use; the OS and CPU side take the rest."""
    memory_bandwidth_gbps: float = Field(gt=0)
    """Peak memory bandwidth in GB/s; bounds decode tokens/s."""
    precisions: list[Precision]
    """Precisions the hardware executes natively."""
    runtimes: list[RuntimeName]
    """Runtimes available on the device."""
    tensorrt_version: str | None = None
    """TensorRT version installed on the device, MAJOR.MINOR[.PATCH[.BUILD]] (JetPack pins it); null if none."""
    ort_execution_provider: Literal[
        "CPUExecutionProvider", "CUDAExecutionProvider", "XnnpackExecutionProvider"
    ] = "CPUExecutionProvider"
    """ONNX Runtime execution provider used on this device."""
    engine_build: Literal["target", "host", "none"] = "none"
    """Where TensorRT engines must be built: engines are not portable across GPUs/versions."""
    dla_cores: int = Field(0, ge=0)
    """Deep-learning accelerator cores (Jetson AGX Orin has 2)."""
    int4_block_sizes: list[int] = Field(default_factory=lambda: [32], min_length=1)
    """int4 block sizes worth trying on this device, fastest first (compress.block_size=auto); the default
    is ONNX Runtime GenAI's 32, and a profile lists larger sizes only where they were measured faster."""

    @field_validator("tensorrt_version")
    @classmethod
    def _version_number(cls, version: str | None) -> str | None:
        # The version reaches build_engine.sh and the manifest: digits and dots only, refused here
        # at check time rather than at the TensorRT stage.
        if version is not None and not _TRT_VERSION.fullmatch(version):
            raise ValueError("a TensorRT version is MAJOR.MINOR[.PATCH[.BUILD]] in digits, e.g. '10.3'")
        return version

    @field_validator("int4_block_sizes")
    @classmethod
    def _powers_of_two(cls, sizes: list[int]) -> list[int]:
        bad = [b for b in sizes if b < 16 or b & (b - 1)]
        if bad:
            raise ValueError(f"int4 block sizes must be powers of two >= 16, got {bad}")
        return sizes


class ModelConfig(Section):
    """Architecture of the model; field names follow Hugging Face configs."""

    name: str
    """Preset name (the config group option)."""
    family: Literal["llama", "qwen2"] = "llama"
    """Architecture family: llama (LlamaForCausalLM) or qwen2 (Qwen2ForCausalLM, qkv bias)."""
    hidden_size: int = Field(gt=0)
    """Width of the residual stream."""
    num_hidden_layers: int = Field(gt=0)
    """Number of decoder blocks."""
    num_attention_heads: int = Field(gt=0)
    """Query heads per layer."""
    num_key_value_heads: int = Field(gt=0)
    """Key/value heads per layer (GQA when < num_attention_heads, MQA when 1)."""
    intermediate_size: int = Field(gt=0)
    """SwiGLU MLP width."""
    vocab_size: int = Field(gt=0)
    """Vocabulary size; must equal the tokenizer's."""
    max_position_embeddings: int = Field(gt=0)
    """Longest context the model is built for (RoPE)."""
    tie_word_embeddings: bool = True
    """Share input embedding and LM head weights (saves vocab × hidden parameters)."""
    rope_theta: float = Field(10000.0, gt=0)
    """RoPE base frequency."""
    rms_norm_eps: float = Field(1e-5, gt=0)
    """RMSNorm epsilon."""
    initializer_range: float = Field(0.02, gt=0)
    """Std of the normal init for a model built from scratch."""


class PruneConfig(Section):
    """Structured pruning of a larger local checkpoint (init=prune).

    Recovery training is the train stage that follows, run on the pruned model
    (e.g. train=finetune train.max_steps=200); train=none skips it.
    """

    keep_layers: list[int] | None = None
    """Explicit layer indices to keep; overrides layer_ratio."""
    layer_ratio: float = Field(1.0, gt=0, le=1)
    """Fraction of layers to keep, chosen by importance."""
    kv_group_ratio: float = Field(1.0, gt=0, le=1)
    """Fraction of KV groups (a KV head with its query heads) to keep per layer."""
    mlp_ratio: float = Field(1.0, gt=0, le=1)
    """Fraction of MLP channels to keep, chosen by importance."""
    importance: Literal["magnitude", "activation"] = "activation"
    """How to rank what to drop: weight magnitude or activation statistics on calibration text."""


class DistillConfig(Section):
    """Knowledge distillation from a local teacher checkpoint (init=distill)."""

    teacher_path: str | None = None
    """Local Hugging Face checkpoint folder of the teacher."""
    temperature: float = Field(2.0, gt=0)
    """Softmax temperature for the KL term."""
    alpha_kl: float = Field(0.5, ge=0)
    """Weight of KL(teacher || student) on softened logits."""
    alpha_ce: float = Field(0.5, ge=0)
    """Weight of the usual next-token cross-entropy."""


class InitConfig(Section):
    """How the model comes to exist before training."""

    name: str
    """Option name."""
    kind: Literal["scratch", "pretrained", "prune", "distill"]
    """scratch: build from `model`; pretrained: load `path`; prune: derive from `path`; distill: student from `model` with a teacher."""
    path: str | None = None
    """Local Hugging Face checkpoint folder or Hub id (pretrained base, or the model to prune); an slmc run folder stands for its final checkpoint."""
    prune: PruneConfig = PruneConfig()
    """Pruning settings (used when kind=prune)."""
    distill: DistillConfig = DistillConfig()
    """Distillation settings (used when kind=distill)."""
    run: str | None = None
    """An slmc run folder to continue from (init=from_run): init.path becomes its final checkpoint (docs/lineage.md)."""


class LoraConfig(Section):
    """LoRA adapters through peft (train=lora)."""

    r: int = Field(8, gt=0)
    """Adapter rank."""
    alpha: float = Field(16.0, gt=0)
    """Scaling numerator (effective scale alpha / r)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter input."""
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    """Module names that receive adapters."""
    merge_before_export: bool = True
    """Merge adapters into the base weights before export (required for bundles)."""


class QatConfig(Section):
    """Quantization-aware training (train=qat)."""

    target: Literal["int8"] = "int8"
    """Precision the fake-quant simulates."""
    observer_steps: int = Field(10, ge=0)
    """Steps before observers freeze their ranges."""


class TrainConfig(Section):
    """The training stage: what the generated train.py does."""

    name: str
    """Option name."""
    kind: Literal["pretrain", "finetune", "lora", "qat", "none"]
    """pretrain from scratch, finetune a checkpoint, LoRA adapters, QAT, or no training."""
    max_steps: int = Field(200, ge=0)
    """Optimizer steps."""
    batch_size: int = Field(16, gt=0)
    """Sequences per micro-batch per process."""
    seq_len: int = Field(128, gt=1)
    """Training sequence length in tokens."""
    grad_accum_steps: int = Field(1, gt=0)
    """Micro-batches accumulated per optimizer step."""
    lr: float = Field(3e-3, gt=0)
    """Peak learning rate (AdamW)."""
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    """Final learning rate as a fraction of `lr` (cosine schedule)."""
    warmup_steps: int = Field(20, ge=0)
    """Linear warm-up steps."""
    weight_decay: float = Field(0.1, ge=0)
    """AdamW decoupled weight decay."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    grad_clip: float = Field(1.0, ge=0)
    """Max global gradient norm (0 disables clipping)."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Autocast precision; auto picks the best the training host supports."""
    eval_every: int = Field(50, gt=0)
    """Steps between held-out perplexity measurements."""
    eval_batches: int = Field(8, gt=0)
    """Held-out batches per evaluation."""
    save_every: int = Field(100, gt=0)
    """Steps between resumable checkpoints."""
    log_every: int = Field(10, gt=0)
    """Steps between metrics.jsonl records."""
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """How several torchrun processes share the model: ddp (a full replica per process) or fsdp (parameters, gradients and optimizer state sharded per decoder layer, for models that don't fit one GPU); one process trains plainly either way."""
    lora: LoraConfig = LoraConfig()
    """LoRA settings (kind=lora)."""
    qat: QatConfig = QatConfig()
    """QAT settings (kind=qat)."""
    tracking: Literal["none", "tensorboard", "mlflow"] = "none"
    """Experiment tracking in train.py besides metrics.jsonl: TensorBoard event files (tensorboard/) or an MLflow
    SQLite store (mlruns/mlflow.db) in the run folder, offline; needs pip install 'slmc[tracking]' where train.py runs."""


class CompressConfig(Section):
    """Post-training compression of the exported model."""

    name: str
    """Option name."""
    precision: Precision
    """Deployed weight precision (fp32 = no compression)."""
    int8_mode: Literal["auto", "dynamic", "static"] = "auto"
    """int8: auto = dynamic (MatMulInteger) on ONNX Runtime, static QDQ with calibration on TensorRT."""
    block_size: Annotated[int, Field(ge=16)] | Literal["auto"] = "auto"
    """int4: weights per quantization block (power of two ≥ 16), or auto: the device's candidates
    (device.int4_block_sizes), largest first, keeping the first whose held-out perplexity stays within
    block_size_tolerance of the smallest candidate's (larger blocks decode faster: fewer scales)."""
    block_size_tolerance: float = Field(0.01, ge=0)
    """block_size=auto: how much worse (fraction of perplexity) a larger block may be than the smallest."""
    symmetric: bool = True
    """Symmetric quantization (zero points of 0): int4 blocks, and TensorRT int8 QDQ (which requires it)."""
    accuracy_level: int = Field(4, ge=0, le=4)
    """int4: MatMulNBits accuracy level (4 = int8 activations on CPU)."""
    calibration_samples: int = Field(16, ge=0)
    """Held-out sequences used for static calibration (0 = none); int4_algo=gptq: training-text sequences."""
    max_ppl_increase: float | None = Field(None, ge=0)
    """Fail the compile if held-out perplexity rises by more than this fraction (0.05 = 5%)."""
    max_accuracy_drop: float | None = Field(None, ge=0, le=1)
    """Fail the compile if the bundle's mean task accuracy (eval.tasks) is lower than the fp32 checkpoint's
    by more than this, in absolute accuracy (0.05 = 5 points); null = off."""
    int4_algo: Literal["rtn", "hqq", "gptq", "kquant"] = "rtn"
    """int4: onnxruntime's MatMulNBits weight-only algorithm for the linear layers. rtn: round to nearest
    per block; hqq: half-quadratic fit of scale and zero point (no data; its zero points are float, which
    ONNX Runtime's CPU kernel cannot prepack: slow to decode on the CPU); gptq: error-compensating
    rounding on calibration_samples sequences of training text; kquant: llama.cpp's k-quant search.
    hqq, kquant and gptq are asymmetric whatever `symmetric` says; the embedding is always rtn."""


class RuntimeConfig(Section):
    """The inference runtime on the device."""

    name: RuntimeName
    """ort (ONNX Runtime) or tensorrt."""
    intra_op_threads: int = Field(0, ge=0)
    """ORT intra-op threads pinned in the bundle (0 = chosen at load for the machine and model)."""
    workspace_mib: int = Field(1024, gt=0)
    """TensorRT builder workspace (memPoolSize) in MiB."""
    opt_seq_len: int | None = Field(None, gt=0)
    """TensorRT profile's optimal sequence length (default: half of export.max_seq_len)."""
    build_engine_on_host: bool = False
    """Build the TensorRT engine on the compiling host (only valid when host == target GPU)."""


class DataConfig(Section):
    """Training and held-out text."""

    name: str
    """Option name."""
    kind: Literal["builtin", "files"]
    """builtin: deterministic text shipped with Python; files: your own files or a Hub dataset id."""
    train_files: list[str] = []
    """Training files (.txt, .jsonl, .json, .parquet, .csv, a save_to_disk folder, or a Hub dataset id), used when kind=files."""
    heldout_files: list[str] = []
    """Held-out files; empty = the last `heldout_fraction` of the training text."""
    jsonl_field: str = "text"
    """format=text: the field holding the text in records (.jsonl, .json, .parquet, .csv, saved or Hub datasets)."""
    heldout_fraction: float = Field(0.05, gt=0, lt=0.5)
    """Share of the text kept for held-out evaluation when no held-out files are given."""
    tokenizer: str | None = None
    """Path to a tokenizer.json; null trains a byte-level BPE locally (or reuses init.path's)."""
    max_chars: int | None = Field(None, gt=0)
    """Cap on training characters read (null = all)."""
    format: Literal["text", "instruction", "chat"] = "text"
    """text: documents to continue; instruction: prompt/response records; chat: `messages` lists of {role, content}."""
    split: str = "train"
    """Split read from a dataset saved with save_to_disk (a DatasetDict) or a Hub dataset id."""
    prompt_field: str = "instruction"
    """format=instruction: the field holding the prompt."""
    response_field: str = "output"
    """format=instruction: the field holding the response (the training target)."""
    input_field: str | None = "input"
    """format=instruction: optional field appended to the prompt when a record has it non-empty (null = none)."""
    system_field: str | None = "system"
    """format=instruction: optional field holding a system message when a record has it (null = none)."""
    messages_field: str = "messages"
    """format=chat: the field holding the list of {role, content} messages."""
    chat_template: str = "auto"
    """auto: the checkpoint's chat template (tokenizer_config.json), else chatml for a tokenizer trained here; or a catalogue name (chatml, llama3, zephyr)."""
    loss_on: Literal["assistant", "all"] = "assistant"
    """chat/instruction: train on assistant/response tokens only, or on every token of the rendered example."""
    packing: bool = True
    """chat/instruction: several whole examples per row (true) or one padded example per row (false)."""
    max_length: int | None = Field(None, gt=1)
    """chat/instruction: longest example in tokens (null = train.seq_len); longer ones follow data.overflow."""
    overflow: Literal["truncate", "drop"] = "truncate"
    """chat/instruction: cut an example longer than data.max_length to it, or drop it (both counted)."""
    chunk_records: int = Field(1000, gt=0)
    """Records (documents) tokenized per chunk by the tokenize stage: its memory, not its output."""


class ExportConfig(Section):
    """ONNX export and the shapes the deployed model serves."""

    max_seq_len: int = Field(256, gt=1)
    """Longest prompt + generation the deployed model serves."""
    max_batch_size: int = Field(1, gt=0)
    """Largest batch the deployed model serves."""
    opset: int = Field(18, ge=17, le=23)
    """ONNX opset."""
    parity_tolerance: float = Field(1e-3, gt=0)
    """Max |Δlogits| between PyTorch and the fp32 ONNX export."""


class GenerationConfig(Section):
    """Generation defaults written into the bundle."""

    max_new_tokens: int = Field(128, gt=0)
    """Default new tokens per request."""
    do_sample: bool = False
    """Sample (true) or greedy (false)."""
    temperature: float = Field(1.0, ge=0)
    """Softmax temperature when sampling."""
    top_k: int = Field(0, ge=0)
    """Keep the k most likely tokens (0 = off)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling mass."""
    repetition_penalty: float = Field(1.0, gt=0)
    """Penalty > 1 discourages repeats."""


class TargetsConfig(Section):
    """Requirements on the deployed model: estimates checked as warnings, and a regression gate against a baseline bundle."""

    min_decode_tokens_per_s: float | None = Field(None, gt=0)
    """Required decode speed at batch 1; compared to the bandwidth estimate."""
    baseline: str | None = None
    """A bundle folder (or a run folder holding bundle/) the new bundle must not regress against: after
    packaging, both are measured side by side on this run's held-out text (docs/regression-gate.md);
    a tolerance below that is exceeded fails the compile with exit code 3. Null: no gate."""
    max_ppl_increase: float | None = Field(None, ge=0)
    """Largest relative held-out perplexity increase over the baseline (0.05 = +5%); null: reported only."""
    max_accuracy_drop: float | None = Field(None, ge=0, le=1)
    """Largest task-accuracy drop below the baseline in absolute points (0.02 = 2 points), where eval.tasks
    is set; null: reported only."""
    min_speed_ratio: float | None = Field(None, gt=0)
    """Smallest candidate / baseline decode tokens/s measured here (0.95 = at most 5% slower); null: reported only."""
    max_size_ratio: float | None = Field(None, gt=0)
    """Largest candidate / baseline bundle size (1.0 = no larger); null: reported only."""


class PackageConfig(Section):
    """The bundle as its consumers see it (docs/lineage.md)."""

    version: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")] | int | None = None
    """Bundle version written to the manifest (as a string); null derives it: the parent run's version + 1 (its last number counted up), 1 for a run with no parent."""


class EvalConfig(Section):
    """Task evaluation beside held-out perplexity (docs/tasks.md): the checkpoint and the bundle."""

    tasks: list[str] | None = None
    """Local task files (JSONL: generation or multiple-choice records); null = the data's own (a shipped
    standard-library task with data=builtin, none with data=files); [] = no task evaluation."""


class DraftConfig(Section):
    """A draft decoder for speculative decoding, made by the lifecycle and packaged in the same bundle
    (docs/speculative.md): the draft is compiled as a run of its own inside this one (`<run>/draft/`),
    from this run's final checkpoint, with this run's data, tokenizer, device, runtime and compression."""

    method: Literal["none", "prune", "distill", "checkpoint"] = "none"
    """none: no draft (prompt lookup needs none); prune: structured pruning of this run's final checkpoint
    (draft.prune), then optional recovery fine-tuning; distill: train a shallower copy of the target's
    shape with this run's final checkpoint as the teacher; checkpoint: a local checkpoint (draft.path)
    that shares the tokenizer."""
    prune: PruneConfig = PruneConfig(layer_ratio=0.5)
    """What prune keeps of the target (method=prune); the default keeps half the layers."""
    num_hidden_layers: int | None = Field(None, gt=0)
    """Decoder layers of the distilled student (method=distill), which otherwise has the target's shape and
    vocabulary; null: half the target's layers."""
    path: str | None = None
    """A local Hugging Face checkpoint folder (method=checkpoint) whose tokenizer.json is the target's."""
    train_steps: int = Field(0, ge=0)
    """Training steps of the draft: recovery fine-tuning after prune (0 = none), distillation steps
    for distill (required there), fine-tuning of a checkpoint draft (0 = none)."""
    max_draft_tokens: int = Field(4, ge=1, le=16)
    """Draft tokens proposed per target call, written to genai_config.json's `speculative` section."""


class SlmcConfig(Section):
    """The whole description: where the model runs and how it is made."""

    seed: int = Field(0, ge=0)
    """Seed for data splits, init and training."""
    run_name: str | None = None
    """Folder name under out_dir; null derives it from the group choices."""
    out_dir: str = "generated"
    """Where run folders are written."""
    host: HostConfig = HostConfig()
    device: DeviceConfig
    model: ModelConfig
    init: InitConfig
    train: TrainConfig
    compress: CompressConfig
    runtime: RuntimeConfig
    data: DataConfig
    export: ExportConfig = ExportConfig()
    generation: GenerationConfig = GenerationConfig()
    targets: TargetsConfig = TargetsConfig()
    package: PackageConfig = PackageConfig()
    eval: EvalConfig = EvalConfig()
    draft: DraftConfig = DraftConfig()
    _environment: dict[str, tuple[str, ...]] = PrivateAttr(default_factory=dict)
    """Keys whose value was read from environment variables (rule provenance.environment_values)."""


def schema_defaults(model: type[Section] = SlmcConfig) -> dict[str, Any]:
    """Every default of the schema as plain data, and '???' (Hydra's "required") for fields without one.

    Hydra composes this under the option files, so every key exists before the options and the
    command line change it: `train.lr=0.1` needs no '+', and an option file that forgets a required
    field is reported by name.
    """
    from pydantic_core import to_jsonable_python

    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        nested = field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation, Section) \
            else None
        if not field.is_required():
            out[name] = to_jsonable_python(field.get_default(call_default_factory=True))
        elif nested is not None:
            out[name] = schema_defaults(nested)
        else:
            out[name] = "???"
    return out
