"""The rule catalogue: every rule id the design committed to is registered, documented and well-formed."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import slmc.rules.catalogue  # noqa: F401  (registers the rules)
from slmc.load import load_config
from slmc.rules._engine import REGISTRY, run_rules
from slmc.rules.context import CheckContext
from slmc.schema import ModelConfig

DESIGN_IDS = {
    "memory.fits_device", "memory.fits_training_host",
    "precision.supported_by_device", "precision.supported_by_runtime",
    "quant.format_matches_runtime", "quant.calibration_required",
    "runtime.available_on_device", "engine.built_on_target",
    "shape.seq_within_context", "shape.profile_covers_runtime",
    "trt.ops_supported",
    "arch.heads_divide_hidden", "arch.kv_heads_divide_heads", "arch.rope_head_dim_even",
    "prune.keeps_divisibility", "distill.tokenizer_shared",
    "lora.merged_before_export", "lora.base_not_quantized_for_merge",
    "qat.requires_train_stage", "train.precision_supported_by_host",
    "data.vocab_matches_model", "data.paths_exist",
    "latency.meets_target",
}


def _registered():
    return REGISTRY.rules


def test_every_design_rule_is_registered():
    missing = DESIGN_IDS - set(_registered())
    assert not missing, f"rules the design committed to are not registered: {sorted(missing)}"


def test_every_rule_has_a_docstring_and_a_dotted_id():
    for rid, r in _registered().items():
        assert re.fullmatch(r"[a-z]+\.[a-z0-9_]+", rid), rid
        assert len(r.doc) > 20, f"{rid} needs a docstring saying what it checks"
        assert r.severity in ("error", "warning")


def test_latency_is_only_a_warning():
    assert _registered()["latency.meets_target"].severity == "warning"


def test_the_default_config_is_clean():
    assert run_rules(load_config([])) == []


_BASE = load_config([])
_OPTIONS = {g: [load_config([f"{g}={n}"]) for n in names] for g, names in {
    "device": ["cpu", "jetson_orin_nano", "gpu_server"], "compress": ["none", "int8", "int4", "fp8"],
    "runtime": ["ort", "tensorrt"], "train": ["pretrain", "lora", "qat", "none"],
}.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hidden=st.integers(1, 4096), layers=st.integers(1, 64), heads=st.integers(1, 64), kv=st.integers(1, 64),
    mlp=st.integers(1, 16384), vocab=st.integers(1, 200_000), ctx_len=st.integers(1, 32768),
    seq=st.integers(2, 65536), new=st.integers(1, 65536), batch=st.integers(1, 64),
    picks=st.tuples(*(st.integers(0, 3) for _ in range(4))), target=st.none() | st.floats(0.1, 1e6),
)
def test_no_rule_crashes_on_any_valid_config(hidden, layers, heads, kv, mlp, vocab, ctx_len, seq, new, batch, picks, target):
    model = ModelConfig(name="m", hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        num_key_value_heads=kv, intermediate_size=mlp, vocab_size=vocab, max_position_embeddings=ctx_len)
    update = {g: getattr(opts[i % len(opts)], g) for (g, opts), i in zip(_OPTIONS.items(), picks)}
    cfg = _BASE.model_copy(update={
        **update, "model": model,
        "export": _BASE.export.model_copy(update={"max_seq_len": seq, "max_batch_size": batch}),
        "generation": _BASE.generation.model_copy(update={"max_new_tokens": new}),
        "targets": _BASE.targets.model_copy(update={"min_decode_tokens_per_s": target}),
    })
    crashed = [v for v in run_rules(cfg, CheckContext()) if "rule crashed" in v.message]
    assert not crashed, crashed
