"""What an architecture family is, as data: the `Family` record every family module fills in.

A family is one Hugging Face decoder implementation (LlamaForCausalLM, Qwen2ForCausalLM, ...)
and the `model_type`s that select it. The fields say how it differs from the others, so a
rule, the size estimator or a stage asks the family instead of testing `family == "llama"`.
Nothing here imports torch or transformers: `slmc check` reads families on its cold path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Mapping

BiasSource = Literal["never", "always", "attention_bias", "mlp_bias"]
"""Where a projection's bias comes from: never, always, or a boolean key of config.json."""

WindowStyle = Literal["none", "sliding_window", "layer_types"]
"""How config.json declares local attention: not at all; one `sliding_window` for every layer
(Mistral, Phi-3); or per layer, `layer_types` naming `sliding_attention` / `full_attention`
(Gemma 3, and Qwen2/Qwen3 through `use_sliding_window` + `max_window_layers`)."""

SPLIT_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Linear modules of a decoder layer with separate q/k/v and gate/up weights."""

FUSED_PROJECTIONS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
"""Linear modules of a decoder layer with fused qkv and gate_up weights (Phi-3)."""

FUSED_PARTS = MappingProxyType({"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj",
                                "gate_proj": "gate_up_proj", "up_proj": "gate_up_proj"})
"""Split name -> the fused module holding it."""

PRUNE_AXES = ("layers", "kv_groups", "mlp_channels")


@dataclass(frozen=True)
class LoraTargets:
    """LoRA target names resolved for one family."""

    modules: tuple[str, ...]                   # what peft's target_modules gets
    unknown: tuple[str, ...] = ()              # names the family's decoder has no module for
    widened: tuple[tuple[str, str], ...] = ()  # (asked, fused module that also adapts its siblings)

    @property
    def peft_target_modules(self) -> str | list[str]:
        """peft's LoraConfig(target_modules=...): its 'all-linear' shortcut only works as a plain string."""
        return "all-linear" if self.modules == ("all-linear",) else list(self.modules)


@dataclass(frozen=True)
class Family:
    """One decoder family: what differs, for the estimator, the rules and the stages."""

    name: str
    """slmc's name for the family (also the `model.family` value for init=scratch where allowed)."""
    model_types: tuple[str, ...]
    """config.json `model_type` values this family reads."""
    causal_lm_class: str
    """The transformers class a checkpoint of this family loads into."""
    published: tuple[str, ...]
    """Hub checkpoints of this shape that people deploy (for messages and tests)."""
    genai_type: str
    """`model.type` in ONNX Runtime GenAI's genai_config.json."""

    # attention
    qkv_bias: BiasSource = "never"
    o_bias: BiasSource = "never"
    mlp_bias: BiasSource = "never"
    qk_norm: bool = False
    """RMSNorm over each head's query and key (head_dim weights each) before RoPE."""
    window: WindowStyle = "none"
    logit_softcapping: bool = False
    """Reads `final_logit_softcapping` / `attn_logit_softcapping` (tanh capping) from config.json."""
    query_pre_attn_scalar: bool = False
    """Scales queries by query_pre_attn_scalar ** -0.5 instead of head_dim ** -0.5."""
    partial_rotary: bool = False
    """Rotates only `partial_rotary_factor` of each head's channels."""
    rope_types: frozenset[str] = frozenset({"default"})
    """RoPE scaling kinds (`rope_type`) the family's transformers code implements."""
    rope_aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Legacy `rope_type` names transformers renames on load (Phi-3: su, yarn -> longrope)."""
    heads_divide_hidden: bool = False
    """transformers' config class refuses hidden_size % num_attention_heads != 0 even with a head_dim."""

    # weights
    fused_qkv: bool = False
    fused_gate_up: bool = False
    norms_per_layer: int = 2
    """RMSNorm weight vectors of width hidden_size in each decoder layer."""
    embedding_scale: Literal["none", "sqrt_hidden"] = "none"
    """Embeddings are multiplied by sqrt(hidden_size) before the first layer (Gemma)."""
    config_defaults: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    """The family config class's defaults for the keys slmc reads, used when config.json omits one."""

    # stages
    prune_axes: tuple[str, ...] = PRUNE_AXES
    tensorrt_notes: tuple[str, ...] = ()
    """What the TensorRT path must know about this family's graph."""

    @property
    def linear_modules(self) -> tuple[str, ...]:
        """Names of the linear modules of one decoder layer (what LoRA can target)."""
        if self.fused_qkv or self.fused_gate_up:
            return FUSED_PROJECTIONS
        return SPLIT_PROJECTIONS

    def default(self, key: str, fallback: object = None) -> object:
        return self.config_defaults.get(key, fallback)

    def lora_targets(self, requested: list[str] | tuple[str, ...]) -> LoraTargets:
        """Map LoRA target names onto this family's modules.

        Split names (q_proj, gate_proj, ...) land on the fused module that holds them in
        fused families, so one config serves every family; `widened` says where that adapts
        more than was named (q_proj alone becomes qkv_proj, which also adapts k and v).
        """
        if "all-linear" in requested:
            return LoraTargets(("all-linear",))
        modules: list[str] = []
        unknown: list[str] = []
        widened: list[tuple[str, str]] = []
        own = self.linear_modules
        for name in requested:
            target = name if name in own else FUSED_PARTS.get(name) if name in FUSED_PARTS else None
            if target is None or target not in own:
                unknown.append(name)
                continue
            if target != name:
                siblings = {k for k, v in FUSED_PARTS.items() if v == target}
                if not siblings <= set(requested):
                    widened.append((name, target))
            if target not in modules:
                modules.append(target)
        return LoraTargets(tuple(modules), tuple(unknown), tuple(widened))


def frozen(mapping: dict) -> Mapping:
    return MappingProxyType(dict(mapping))
