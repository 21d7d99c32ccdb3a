"""Checkpoint rules: the checkpoint a run starts from is readable, supported, and the truth.

`slmc.checkpoint.inspect_checkpoint` has already read config.json, the tokenizer files
and the safetensors headers of init.path and the teacher (resolving a Hub id first);
these rules report what it found, each finding naming its file, so an unsupported
architecture or a broken file stops at `slmc check` instead of late inside a stage.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ..checkpoint import CheckpointFacts
from ._engine import rule
from .context import ensure_context


def _checkpoints(cfg: Any, ctx) -> dict[str, CheckpointFacts]:
    return dict(ensure_context(cfg, ctx).checkpoints)


def _report(rule, cfg, ctx, check: str):
    for key, facts in _checkpoints(cfg, ctx).items():
        for f in facts.of(check):
            yield rule.violation((key,), f.message, f.fix, f.severity)


@rule("init.hub_resolves")
def hub_resolves(rule, cfg, ctx):
    """A Hub id in init.path or init.distill.teacher_path (org/name[@revision]) resolves through huggingface_hub: its cache, HF_HUB_OFFLINE and login decide; only config and tokenizer files are fetched at check."""
    yield from _report(rule, cfg, ctx, "source")


@rule("checkpoint.config_valid")
def config_valid(rule, cfg, ctx):
    """The checkpoint's config.json is a bounded JSON object whose sizes are whole numbers in a real decoder's range, whose floats are finite and positive, whose token ids lie in the vocabulary and whose layer_types match its layers."""
    yield from _report(rule, cfg, ctx, "config")


@rule("checkpoint.architecture_supported")
def architecture_supported(rule, cfg, ctx):
    """The checkpoint's model_type is one of the supported families (llama, qwen2, qwen3, gemma3, phi3, mistral), dense, decoder-only and text-only, with a RoPE scaling kind its family implements."""
    yield from _report(rule, cfg, ctx, "architecture")


@rule("checkpoint.no_remote_code")
def no_remote_code(rule, cfg, ctx):
    """A checkpoint that needs its own code (auto_map with a custom model_type) is refused: slmc never runs checkpoint code; auto_map next to a built-in model_type is ignored, with a warning."""
    yield from _report(rule, cfg, ctx, "remote_code")


@rule("checkpoint.weights_safetensors")
def weights_safetensors(rule, cfg, ctx):
    """The checkpoint's weights are safetensors whose headers read and whose files hold every byte the header claims (shards named by the index exist); pickle weights (pytorch_model.bin) are refused."""
    yield from _report(rule, cfg, ctx, "weights")


@rule("checkpoint.tokenizer_files_valid")
def tokenizer_files_valid(rule, cfg, ctx):
    """The checkpoint's tokenizer.json, tokenizer_config.json, special_tokens_map.json and generation_config.json, where present, are bounded JSON objects."""
    yield from _report(rule, cfg, ctx, "tokenizer")
    ctx = ensure_context(cfg, ctx)
    for key, facts in _checkpoints(cfg, ctx).items():
        if key in ctx.problems and key not in ctx.paths:  # a Hub snapshot's tokenizer.json (local ones: data.paths_exist)
            yield rule.violation((key,), ctx.problems[key], f"use a revision of {facts.source} with a valid tokenizer.json")
        if facts.hub is not None and facts.config is not None and "tokenizer.json" not in facts.names:
            yield rule.violation(
                (key,), f"{facts.hub.ref} (commit {facts.hub.commit}) has no tokenizer.json",
                "set data.tokenizer to the model's tokenizer.json (slmc reads tokenizers' JSON format)",
            )


# -- the model group against the checkpoint ------------------------------------

COMPARED = ("family", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "intermediate_size", "vocab_size", "max_position_embeddings", "tie_word_embeddings")


@rule("checkpoint.model_group_unused")
def model_group_unused(rule, cfg, ctx):
    """With init=pretrained|prune the architecture is the checkpoint's config.json: model.* values set on the command line that disagree with it are refused (the checkpoint wins); a model preset chosen alongside is ignored, with a warning."""
    if cfg.init.kind not in ("pretrained", "prune"):
        return
    arch = ensure_context(cfg, ctx).init_arch
    if arch is None:
        return  # the checkpoint rules say why
    checkpoint = {"family": arch.family, **{k: getattr(arch, k) for k in COMPARED[1:]}}
    model = cfg.model.model_dump()
    preset = _preset(cfg.model.name)
    overridden = [k for k in COMPARED if preset is not None and model[k] != preset.get(k)]
    if preset is None:
        overridden = list(COMPARED)  # a model group from elsewhere: every value was chosen
    disagree = [k for k in overridden if model[k] != checkpoint[k]]
    if disagree:
        shown = ", ".join(f"model.{k}={model[k]} (checkpoint: {checkpoint[k]})" for k in disagree)
        yield rule.violation(
            tuple(f"model.{k}" for k in disagree) + ("init.path",),
            f"init={cfg.init.kind} builds the architecture of init.path's config.json; {shown}",
            f"drop the model.* override(s): the checkpoint's config.json wins "
            f"(or use init=scratch to build the model group's architecture)",
        )
    elif cfg.model.name != _default_preset() and preset is not None:
        differs = [k for k in COMPARED if model[k] != checkpoint[k]]
        if differs:
            yield rule.violation(
                ("model", "init.path"),
                f"model={cfg.model.name} is not used with init={cfg.init.kind}: the architecture is init.path's "
                f"config.json ({arch.family}, {arch.shapes()})",
                "leave out model=... with init=pretrained|prune (the checkpoint's config.json wins)", "warning",
            )


@lru_cache(maxsize=None)
def _shipped_models() -> dict[str, dict]:
    from ..schema import ModelConfig
    from .context import shipped_options

    out = {}
    for name, data in shipped_options("model").items():
        try:
            out[name] = ModelConfig.model_validate(data).model_dump()
        except ValueError:
            continue
    return out


def _preset(name: str) -> dict | None:
    return _shipped_models().get(name)


@lru_cache(maxsize=1)
def _default_preset() -> str:
    """The model option conf/config.yaml's defaults list picks."""
    import yaml

    from ..load import conf_dir

    defaults = yaml.safe_load((conf_dir() / "config.yaml").read_text(encoding="utf-8")).get("defaults", [])
    return next((d["model"] for d in defaults if isinstance(d, dict) and "model" in d), "")


# -- RoPE that depends on the sequence length ------------------------------------


@rule("checkpoint.rope_exportable")
def rope_exportable(rule, cfg, ctx):
    """RoPE scaling that changes with the sequence length (dynamic NTK, Phi-3's longrope) stays within original_max_position_embeddings when exported: a traced graph keeps the frequencies of one length."""
    ctx = ensure_context(cfg, ctx)
    arch = ctx.init_arch if cfg.init.kind in ("pretrained", "prune") else None
    if arch is None or arch.rope_type not in ("dynamic", "longrope"):
        return
    original = arch.original_max_position_embeddings or arch.max_position_embeddings
    n = cfg.export.max_seq_len
    if n > original:
        yield rule.violation(
            ("export.max_seq_len", "init.path"),
            f"export.max_seq_len={n} exceeds original_max_position_embeddings={original} of the checkpoint's "
            f"{arch.rope_type} RoPE: its frequencies switch past that length, and an exported graph holds only one set",
            f"set export.max_seq_len={original}",
        )
