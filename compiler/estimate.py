"""Pure arithmetic about a model: parameters, bytes, KV cache, memory, decode speed.

Nothing here reads files or imports torch; the rules (and the plan, the report)
turn a config into these numbers before anything expensive runs. Sizes are in
bytes; `fmt_bytes` prints decimal units (1 GB = 1e9 bytes), the same units the
device profiles use for `memory_gb`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping

from .families import Family, for_config as family_for_config, get as get_family

FLOAT_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
MIB = 1024 * 1024


@dataclass(frozen=True)
class Arch:
    """The numbers of a decoder that every estimate needs, for any supported family.

    `family` names a module of `slmc.families`; what differs between families (biases,
    qk-norm, norms per layer, fused projections, windows) is read from there.
    """

    family: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    head_dim: int
    head_dim_explicit: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    sliding_window: int | None = None
    """Tokens a sliding-attention layer sees; None when every layer attends to the whole context."""
    layer_types: tuple[str, ...] | None = None
    """Per layer 'sliding_attention' / 'full_attention' when they differ; None when all layers are alike."""
    rope_type: str = "default"
    partial_rotary_factor: float = 1.0
    original_max_position_embeddings: int | None = None
    """The context RoPE scaling extends from (longrope, dynamic, llama3, yarn); None without scaling."""

    @classmethod
    def from_model(cls, model: Any) -> "Arch":
        """From a `ModelConfig` (head_dim is implied: hidden_size // num_attention_heads)."""
        spec = get_family(model.family)
        return cls(
            family=model.family,
            hidden_size=model.hidden_size,
            num_hidden_layers=model.num_hidden_layers,
            num_attention_heads=model.num_attention_heads,
            num_key_value_heads=model.num_key_value_heads,
            intermediate_size=model.intermediate_size,
            vocab_size=model.vocab_size,
            max_position_embeddings=model.max_position_embeddings,
            tie_word_embeddings=model.tie_word_embeddings,
            head_dim=model.hidden_size // model.num_attention_heads,
            qkv_bias=spec.qkv_bias == "always",
            o_bias=spec.o_bias == "always",
        )

    @classmethod
    def from_hf_config(cls, cfg: Mapping[str, Any]) -> "Arch":
        """From a Hugging Face config.json dict.

        Raises `UnsupportedArchitecture` (a ValueError) for a model_type no family reads, and
        KeyError/TypeError/ValueError for a missing or malformed field; a count must be a whole
        number (128.5 is refused, not truncated). `slmc.checkpoint` validates a file first and
        names the field; this is the arithmetic's own guard.
        """
        spec = family_for_config(cfg)
        hidden, heads = _whole(cfg, "hidden_size"), _whole(cfg, "num_attention_heads")
        kv = _whole(cfg, "num_key_value_heads", spec.default("num_key_value_heads") or heads)
        head_dim = _whole(cfg, "head_dim", spec.default("head_dim") or 0) or hidden // heads
        explicit = cfg.get("head_dim") is not None or spec.default("head_dim") is not None
        window, layer_types = _windows(cfg, spec, _whole(cfg, "num_hidden_layers"))
        rope_type, partial, original = _rope(cfg, spec)
        return cls(
            family=spec.name,
            hidden_size=hidden,
            num_hidden_layers=_whole(cfg, "num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=kv,
            intermediate_size=_whole(cfg, "intermediate_size"),
            vocab_size=_whole(cfg, "vocab_size"),
            max_position_embeddings=_whole(cfg, "max_position_embeddings", spec.default("max_position_embeddings") or 2048),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", spec.default("tie_word_embeddings", False))),
            head_dim=head_dim,
            head_dim_explicit=explicit,
            qkv_bias=_bias(cfg, spec.qkv_bias),
            o_bias=_bias(cfg, spec.o_bias),
            mlp_bias=_bias(cfg, spec.mlp_bias),
            sliding_window=window,
            layer_types=layer_types,
            rope_type=rope_type,
            partial_rotary_factor=partial,
            original_max_position_embeddings=original,
        )

    @property
    def spec(self) -> Family:
        """The family's traits (`slmc.families`)."""
        return get_family(self.family)

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def rotary_dim(self) -> int:
        """Channels of each head that RoPE rotates (all of them unless partial rotary)."""
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def sliding_layers(self) -> int:
        """Layers that attend through a sliding window."""
        if self.sliding_window is None:
            return 0
        if self.layer_types is None:
            return self.num_hidden_layers
        return sum(t == "sliding_attention" for t in self.layer_types)

    def shapes(self) -> str:
        """One line for messages."""
        return (
            f"layers {self.num_hidden_layers}, hidden {self.hidden_size}, heads {self.num_attention_heads} "
            f"(kv {self.num_key_value_heads}, head_dim {self.head_dim}), mlp {self.intermediate_size}, "
            f"vocab {self.vocab_size}"
        )


def _whole(cfg: Mapping[str, Any], key: str, default: Any = None) -> int:
    """An integer field (bool and 128.5 are refused: int() would truncate them silently)."""
    value = cfg.get(key) if cfg.get(key) is not None else default
    if value is None:
        raise KeyError(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be a whole number, got {value!r}")
    return value


def _bias(cfg: Mapping[str, Any], source: str) -> bool:
    if source in ("never", "always"):
        return source == "always"
    return bool(cfg.get(source, False))


def _windows(cfg: Mapping[str, Any], spec: Family, layers: int) -> tuple[int | None, tuple[str, ...] | None]:
    """(sliding_window, layer_types), normalised: layer_types only when layers differ, no window when none slides.

    Follows the family config classes: Qwen2/Qwen3 slide only with use_sliding_window (layers
    from max_window_layers on); Gemma 3 slides every layer but each n-th (sliding_window_pattern).
    """
    if spec.window == "none":
        return None, None
    window = cfg.get("sliding_window", spec.default("sliding_window"))
    if spec.window == "sliding_window":
        return (_whole(cfg, "sliding_window") if window is not None else None), None
    if "use_sliding_window" in spec.config_defaults and not cfg.get("use_sliding_window", False):
        window = None
    types = cfg.get("layer_types")
    if not isinstance(types, list):
        if "use_sliding_window" in spec.config_defaults:
            start = cfg.get("max_window_layers", spec.default("max_window_layers"))
            types = ["sliding_attention" if window is not None and i >= start else "full_attention" for i in range(layers)]
        else:
            pattern = cfg.get("sliding_window_pattern") or cfg.get("_sliding_window_pattern") or spec.default("sliding_window_pattern")
            types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(layers)]
    if window is None or "sliding_attention" not in types:
        return None, None
    window = _whole(cfg, "sliding_window", window)
    return window, (None if all(t == "sliding_attention" for t in types) else tuple(types))


def rope_parameters(cfg: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The RoPE parameter dicts of a config: transformers 5's `rope_parameters` (one dict, or one per
    layer type as Gemma 3 writes it) or the older `rope_scaling`."""
    rp = cfg.get("rope_parameters")
    if rp is None:
        rp = cfg.get("rope_scaling")
    if not isinstance(rp, Mapping):
        return []
    if rp and all(isinstance(v, Mapping) for v in rp.values()):
        return list(rp.values())
    return [rp]


def _rope(cfg: Mapping[str, Any], spec: Family) -> tuple[str, float, int | None]:
    """(scaling kind, partial rotary factor, original context) of the first non-default RoPE."""
    kinds, partial, original = [], cfg.get("partial_rotary_factor"), None
    for params in rope_parameters(cfg):
        kind = params.get("rope_type", params.get("type")) or "default"
        kinds.append(spec.rope_aliases.get(kind, kind))
        partial = params.get("partial_rotary_factor", partial)
        original = params.get("original_max_position_embeddings", original)
    scaled = [k for k in kinds if k != "default"]
    kind = scaled[0] if scaled else "default"
    original = cfg.get("original_max_position_embeddings", original) if kind != "default" else None
    return kind, float(partial if partial is not None else 1.0), original


# -- parameters ---------------------------------------------------------------


def projection_shapes(a: Arch) -> dict[str, tuple[int, int]]:
    """(in, out) features of each linear module of one decoder layer, by its module name
    (fused qkv_proj / gate_up_proj in families that fuse them)."""
    h, i = a.hidden_size, a.intermediate_size
    split = {
        "q_proj": (h, a.q_dim), "k_proj": (h, a.kv_dim), "v_proj": (h, a.kv_dim), "o_proj": (a.q_dim, h),
        "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h),
        "qkv_proj": (h, a.q_dim + 2 * a.kv_dim), "gate_up_proj": (h, 2 * i),
    }
    return {name: split[name] for name in a.spec.linear_modules}


def linear_params_per_layer(a: Arch) -> int:
    """Weights of the projections of one decoder block (no biases); fusing changes no count."""
    return sum(i * o for i, o in projection_shapes(a).values())


def _bias_params_per_layer(a: Arch) -> int:
    attn = (a.q_dim + 2 * a.kv_dim if a.qkv_bias else 0) + (a.hidden_size if a.o_bias else 0)
    mlp = 2 * a.intermediate_size + a.hidden_size if a.mlp_bias else 0
    return attn + mlp


def _norm_params_per_layer(a: Arch) -> int:
    """RMSNorm weights of one block: the family's hidden-width norms, plus per-head q/k norms."""
    return a.spec.norms_per_layer * a.hidden_size + (2 * a.head_dim if a.spec.qk_norm else 0)


def param_count(a: Arch) -> int:
    """Parameters as `sum(p.numel() for p in model.parameters())` counts them (tied head once)."""
    per_layer = linear_params_per_layer(a) + _bias_params_per_layer(a) + _norm_params_per_layer(a)
    embed = a.vocab_size * a.hidden_size
    head = 0 if a.tie_word_embeddings else embed
    return embed + a.num_hidden_layers * per_layer + a.hidden_size + head  # + final norm


def lora_params(a: Arch, targets: list[str], r: int) -> int:
    """Adapter parameters: r × (in + out) for every targeted projection of every layer
    (target names resolved by the family: q_proj lands on qkv_proj where q, k, v are fused)."""
    dims = projection_shapes(a)
    modules = a.spec.lora_targets(targets).modules
    chosen = dims if "all-linear" in modules else {k: v for k, v in dims.items() if k in modules}
    return a.num_hidden_layers * sum(r * (i + o) for i, o in chosen.values())


# -- deployed bytes -----------------------------------------------------------


def bytes_per_weight(precision: str, block_size: int = 32, symmetric: bool = True, channel_len: int = 0) -> float:
    """Average bytes one weight of a projection takes at `precision`, scales included.

    int8 (per output channel): 1 byte + an fp32 scale and an 8-bit zero point per
    channel of `channel_len` weights. int4 (MatMulNBits, block-wise): half a byte
    + an fp32 scale per block (+ a 4-bit zero point per block when asymmetric).
    fp8: 1 byte, per-tensor scales are negligible.
    """
    if precision in FLOAT_BYTES:
        return float(FLOAT_BYTES[precision])
    if precision == "fp8":
        return 1.0
    if precision == "int8":
        return 1.0 + (5.0 / channel_len if channel_len else 0.0)
    if precision == "int4":
        return 0.5 + (4.0 + (0.0 if symmetric else 0.5)) / block_size
    raise ValueError(f"unknown precision {precision!r}")


@dataclass(frozen=True)
class WeightBytes:
    """Deployed weight bytes, split the way decode reads them."""

    layers: float      # all decoder blocks: projections at the deployed precision, norms/biases float
    head: float        # LM head MatMul (a quantized copy of the embedding when tied and quantized)
    embedding: float   # the Gather table (read one row per token)

    @property
    def total(self) -> float:
        return self.layers + self.head + self.embedding

    @property
    def read_per_token(self) -> float:
        """Bytes decode reads for one token at batch 1: every block + the head, one embedding row."""
        return self.layers + self.head


def weight_bytes(
    a: Arch, precision: str, block_size: int = 32, symmetric: bool = True, quantize_embedding: bool = False,
) -> WeightBytes:
    """Weights at the deployed precision.

    Float casts (fp16/bf16) cast everything, and a tied head stays shared. Integer
    and fp8 formats quantize the projections and the head MatMul; the embedding
    table stays fp32 unless `quantize_embedding` (ONNX Runtime's int8 Gather or int4
    GatherBlockQuantized), and a tied table is stored twice (table + quantized head).
    """
    float_bytes = FLOAT_BYTES.get(precision, 4)
    proj = linear_params_per_layer(a) * bytes_per_weight(precision, block_size, symmetric, a.hidden_size)
    small = (_bias_params_per_layer(a) + _norm_params_per_layer(a)) * float_bytes
    layers = a.num_hidden_layers * (proj + small) + a.hidden_size * float_bytes
    table = a.vocab_size * a.hidden_size
    head_q = table * bytes_per_weight(precision, block_size, symmetric, a.hidden_size)
    if precision in FLOAT_BYTES:  # a tied table is stored once and read whole by the head
        return WeightBytes(layers, head_q, 0.0 if a.tie_word_embeddings else table * float_bytes)
    embedding = table * (bytes_per_weight(precision, block_size, symmetric) if quantize_embedding else 4.0)
    return WeightBytes(layers, head_q, embedding)


def kv_dtype_bytes(precision: str) -> int:
    """KV cache element size: fp16 in fp16/bf16/fp8 bundles, fp32 otherwise (docs/bundle-format.md)."""
    return 2 if precision in ("fp16", "bf16", "fp8") else 4


def kv_cache_bytes(a: Arch, seq_len: int, batch: int, dtype_bytes: int) -> int:
    """2 (K and V) × layers × kv_heads × head_dim × seq_len × batch × dtype bytes."""
    return 2 * a.num_hidden_layers * a.num_key_value_heads * a.head_dim * seq_len * batch * dtype_bytes


# Fixed costs of a runtime process: ONNX Runtime's session, arena and Python on
# the CPU; a CUDA context with cuBLAS/cuDNN handles on NVIDIA GPUs (Jetson
# included: there it comes out of the same shared memory).
RUNTIME_BASE_BYTES = {"cpu": 64 * MIB, "cuda": 512 * MIB}


def runtime_overhead_bytes(
    a: Arch, seq_len: int, batch: int, on_cuda: bool, workspace_mib: int = 0, materialized_scores: bool = True,
) -> int:
    """Runtime cost beyond weights and KV cache, for a prefill of `seq_len` tokens.

    = base (RUNTIME_BASE_BYTES) + TensorRT workspace
      + fp32 logits for the whole prompt: batch × seq × vocab × 4
      + one block's live activations: batch × seq × (4·hidden + 3·intermediate) × 4
      + one layer's attention scores when the graph materializes them (standard-op
        ONNX on ONNX Runtime; TensorRT fuses attention): batch × heads × seq × seq × 4.
    """
    base = RUNTIME_BASE_BYTES["cuda" if on_cuda else "cpu"] + workspace_mib * MIB
    logits = batch * seq_len * a.vocab_size * 4
    block = batch * seq_len * (4 * a.hidden_size + 3 * a.intermediate_size) * 4
    scores = batch * a.num_attention_heads * seq_len * seq_len * 4 if materialized_scores else 0
    return base + logits + block + scores


@dataclass(frozen=True)
class DeployMemory:
    weights: float
    kv_cache: int
    overhead: int

    @property
    def total(self) -> float:
        return self.weights + self.kv_cache + self.overhead


def deploy_memory(
    a: Arch, precision: str, seq_len: int, batch: int, *, on_cuda: bool, workspace_mib: int = 0,
    block_size: int = 32, symmetric: bool = True, tensorrt: bool = False, quantize_embedding: bool = False,
    kv_bytes: int | None = None,
) -> DeployMemory:
    """Weights at `precision` + KV cache at seq_len × batch (`kv_bytes` per element) + runtime overhead."""
    w = weight_bytes(a, precision, block_size, symmetric, quantize_embedding).total
    kv = kv_cache_bytes(a, seq_len, batch, kv_bytes or kv_dtype_bytes(precision))
    overhead = runtime_overhead_bytes(a, seq_len, batch, on_cuda, workspace_mib, materialized_scores=not tensorrt)
    return DeployMemory(w, kv, overhead)


def trt_build_bytes(a: Arch, precision: str, workspace_mib: int) -> float:
    """Peak of building a TensorRT engine on the device.

    The parser holds the ONNX weights (fp32, or int8 for a QDQ graph) while the
    builder writes the engine's weights at `precision`; plus the builder workspace
    and the CUDA context.
    """
    onnx_weights = weight_bytes(a, "int8" if precision == "int8" else "fp32").total
    return RUNTIME_BASE_BYTES["cuda"] + workspace_mib * MIB + onnx_weights + weight_bytes(a, precision).total


# -- training -----------------------------------------------------------------

TRAIN_BASE_BYTES = 512 * MIB  # torch, Python and the data pipeline (or the CUDA context)


def activation_bytes(a: Arch, batch: int, seq_len: int, act_bytes: int, math_attention: bool) -> int:
    """Activations kept for backward, whole model, one micro-batch.

    Per token and layer a Llama block saves ≈ 8·hidden + 3·kv_dim + 4·intermediate
    elements (2 norm in/outs, q/k/v and rotated q/k, attention output, o_proj input,
    gate, up, act(gate), gate·up), plus 2·heads·seq attention scores/probs when
    attention runs the math path (CPU). The LM head adds 3 × vocab fp32 values per
    token (logits, log-softmax, its gradient). Total:
      batch × seq × [layers × (8h + 3kv + 4i + 2·a·s·[math]) × act_bytes + 3·V·4].
    """
    per_layer = 8 * a.hidden_size + 3 * a.kv_dim + 4 * a.intermediate_size
    if math_attention:
        per_layer += 2 * a.num_attention_heads * seq_len
    return batch * seq_len * (a.num_hidden_layers * per_layer * act_bytes + 3 * a.vocab_size * 4)


@dataclass(frozen=True)
class TrainMemory:
    """One training process's peak memory, by part (bytes)."""

    weights: int
    grads: int
    optimizer: int
    activations: int
    teacher: int = 0
    base: int = TRAIN_BASE_BYTES

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer + self.activations + self.teacher + self.base

    def breakdown(self) -> str:
        parts = [("weights", self.weights), ("grads", self.grads), ("AdamW", self.optimizer),
                 ("activations", self.activations), ("teacher", self.teacher), ("runtime", self.base)]
        return " + ".join(f"{name} {fmt_bytes(n)}" for name, n in parts if n)


def training_memory(
    a: Arch, *, batch: int, seq_len: int, act_bytes: int, math_attention: bool,
    trainable: int | None = None, extra_weight_copies: int = 0, teacher: Arch | None = None, shards: int = 1,
) -> TrainMemory:
    """AdamW training with fp32 master weights.

    Full training: params × (4 weights + 4 grads + 8 AdamW m and v) = 16 bytes/param.
    LoRA: pass `trainable` (adapter params): the frozen base costs 4 bytes/param and
    only the adapters get grads and AdamW state (4 + 4 + 8 bytes each).
    `extra_weight_copies` adds fp32 copies (QAT's fake-quantized weights).
    Distillation adds the teacher's fp32 weights and its fp32 logits (no grads).
    `shards` > 1 (FSDP over that many processes, full training): each process keeps 1/shards
    of the weights, grads and AdamW state, plus one decoder layer's full weights and grads
    while that layer is gathered for its forward or backward.
    """
    p = param_count(a)
    t = p if trainable is None else trainable
    adapters = 4 * t if trainable is not None else 0
    weights = 4 * p + adapters + 4 * p * extra_weight_copies
    grads, optimizer = 4 * t, 8 * t
    if shards > 1:
        gathered = 4 * linear_params_per_layer(a)
        weights, grads, optimizer = -(-weights // shards) + gathered, -(-grads // shards) + gathered, -(-optimizer // shards)
    teacher_bytes = 0
    if teacher is not None:
        teacher_bytes = 4 * param_count(teacher) + batch * seq_len * teacher.vocab_size * 4
    return TrainMemory(
        weights=weights, grads=grads, optimizer=optimizer,
        activations=activation_bytes(a, batch, seq_len, act_bytes, math_attention), teacher=teacher_bytes,
    )


def forward_only_bytes(a: Arch, batch: int, seq_len: int) -> int:
    """fp32 inference under no_grad (pruning's importance pass): weights + one block + logits."""
    return 4 * param_count(a) + runtime_overhead_bytes(a, seq_len, batch, on_cuda=False) + TRAIN_BASE_BYTES


# -- speed --------------------------------------------------------------------


def decode_tokens_per_s(
    a: Arch, precision: str, bandwidth_gbps: float, context: int, *, block_size: int = 32, symmetric: bool = True,
    kv_bytes: int | None = None,
) -> tuple[float, float, int]:
    """Upper bound on batch-1 decode speed: bandwidth / bytes read per token.

    Bytes per token = weights read at the deployed precision (every block and the
    head; one embedding row) + the KV cache read at `context` tokens.
    Returns (tokens/s, weight bytes per token, KV bytes per token).
    """
    w = weight_bytes(a, precision, block_size, symmetric).read_per_token
    kv = kv_cache_bytes(a, context, 1, kv_bytes or kv_dtype_bytes(precision))
    return bandwidth_gbps * 1e9 / (w + kv), w, kv


# -- pruning ------------------------------------------------------------------


@dataclass(frozen=True)
class PrunePlan:
    """The architecture structured pruning leaves, or None with `group_problem` saying why not."""

    arch: Arch | None
    kept_layers: tuple[int, ...]
    problems: tuple[str, ...]       # about keep_layers
    group_problem: str | None = None


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def prune_arch(
    src: Arch, *, layer_ratio: float, kv_group_ratio: float, mlp_ratio: float,
    keep_layers: list[int] | None = None, mlp_multiple: int = 8,
) -> PrunePlan:
    """Pruned shapes: layers, whole KV groups (a KV head with its query heads), MLP channels.

    Kept counts round half up and never drop below one. head_dim is kept, so the
    pruned config carries it explicitly (heads × head_dim may differ from hidden).
    The MLP width rounds to a multiple of `mlp_multiple` when the source width allows.
    """
    problems: list[str] = []
    n = src.num_hidden_layers
    if keep_layers is not None:
        bad = sorted({i for i in keep_layers if not 0 <= i < n})
        dups = sorted({i for i in keep_layers if keep_layers.count(i) > 1})
        if bad:
            problems.append(f"keep_layers {bad} out of range: the source has layers 0..{n - 1}")
        if dups:
            problems.append(f"keep_layers repeats {dups}")
        if not keep_layers:
            problems.append("keep_layers is empty: at least one layer must stay")
        kept = tuple(sorted(set(i for i in keep_layers if 0 <= i < n)))
    else:
        kept = tuple(range(max(1, round_half_up(n * layer_ratio))))  # which ones: chosen by importance later
    if src.num_attention_heads % src.num_key_value_heads:
        why = (f"source has {src.num_attention_heads} query heads for {src.num_key_value_heads} KV heads "
               "(not a whole group per KV head), so KV groups cannot be pruned")
        return PrunePlan(None, kept, tuple(problems), why)
    group = src.num_attention_heads // src.num_key_value_heads
    groups = max(1, round_half_up(src.num_key_value_heads * kv_group_ratio))
    width = src.intermediate_size * mlp_ratio
    if src.intermediate_size >= mlp_multiple:
        mlp = min(src.intermediate_size, max(mlp_multiple, round_half_up(width / mlp_multiple) * mlp_multiple))
    else:
        mlp = max(1, round_half_up(width))
    window, types = _kept_windows(src, kept or (0,))
    arch = replace(
        src, num_hidden_layers=len(kept) or 1, num_key_value_heads=groups, num_attention_heads=groups * group,
        intermediate_size=mlp, head_dim_explicit=True, sliding_window=window, layer_types=types,
    )
    return PrunePlan(arch, kept, tuple(problems))


def _kept_windows(src: Arch, kept: tuple[int, ...]) -> tuple[int | None, tuple[str, ...] | None]:
    """Each kept layer keeps its attention kind (for ratios, the first layers stand in until
    importance picks them), normalised as in Arch.from_hf_config."""
    if src.layer_types is None:
        return src.sliding_window, None
    types = tuple(src.layer_types[i] for i in kept)
    if "sliding_attention" not in types:
        return None, None
    return src.sliding_window, (None if all(t == "sliding_attention" for t in types) else types)


# -- formatting ---------------------------------------------------------------


def fmt_bytes(n: float) -> str:
    """Decimal units, 3 significant digits: '1.23 GB', '512 MB', '12.3 kB'."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            x = n / size
            return f"{x:.3g} {unit}" if abs(x) < 100 else f"{x:.0f} {unit}"
    return f"{int(n)} B"
