"""Families as data, checked against transformers itself: defaults, modules, sizes, LoRA targets."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from slmc import families
from slmc.estimate import Arch, lora_params, param_count, projection_shapes, prune_arch

from .conftest import FAMILY_OF, PUBLISHED, UNSUPPORTED, cut

torch.set_num_threads(1)


def _hf_model(config: dict, device: str = "meta"):
    from transformers import AutoConfig, AutoModelForCausalLM

    values = {k: v for k, v in config.items() if k not in ("model_type", "architectures", "auto_map")}
    with torch.device(device):
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(config["model_type"], **values))


def test_registry_finds_each_family_by_name_and_model_type():
    assert families.SUPPORTED == ("llama", "qwen2", "qwen3", "gemma3", "phi3", "mistral")
    for name, fam in families.FAMILIES.items():
        assert families.get(name) is fam
        for mt in fam.model_types:
            assert families.for_model_type(mt) is fam
    assert families.for_model_type("olmoe") is None and families.for_model_type(None) is None
    with pytest.raises(KeyError, match="supported: llama, qwen2"):
        families.get("gpt2")


@pytest.mark.parametrize("config,why", [
    (UNSUPPORTED["olmoe"], "mixture of experts"),
    (UNSUPPORTED["gpt2"], "GPT-2"),
    ({"model_type": "t5", "is_encoder_decoder": True}, "encoder-decoder"),
    ({"model_type": "llava", "vision_config": {}}, "multimodal"),
    ({"model_type": "llama", "num_local_experts": 8}, "mixture of experts"),  # experts behind a supported type
    ({"model_type": "my_custom"}, "not a supported architecture"),
    ({}, "no model_type"),
])
def test_unsupported_architectures_are_refused_with_the_reason_and_the_supported_list(config, why):
    with pytest.raises(families.UnsupportedArchitecture) as err:
        families.for_config(config)
    assert why in str(err.value)
    if config.get("model_type"):
        assert "llama, qwen2, qwen3, gemma3 (gemma3_text), phi3, mistral" in str(err.value)


@pytest.mark.parametrize("name", list(families.FAMILIES))
def test_family_data_matches_transformers(name):
    """Defaults slmc falls back on, the causal-LM class and the decoder's linear modules are transformers'."""
    import transformers
    from transformers import CONFIG_MAPPING

    fam = families.get(name)
    (model_type,) = fam.model_types
    fields = {f.name: f.default for f in dataclasses.fields(CONFIG_MAPPING[model_type])}
    for key, value in fam.config_defaults.items():
        if key in fields:
            assert fields[key] == value, (key, fields[key], value)
    assert hasattr(transformers, fam.causal_lm_class)
    sample = next(k for k, f in FAMILY_OF.items() if f == name)
    model = _hf_model(cut(sample))
    layer = model.model.layers[0]
    linear = {n.split(".")[-1] for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}
    assert linear == set(fam.linear_modules)
    norms = [n for n, p in layer.named_parameters() if p.ndim == 1 and p.shape[0] == model.config.hidden_size
             and "norm" in n]
    assert len(norms) == fam.norms_per_layer
    assert fam.qk_norm == any("q_norm" in n for n, _ in layer.named_parameters())


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_param_count_matches_transformers_at_published_and_cut_sizes(name, family_checkpoints):
    """The estimator sizes each family's real checkpoint (meta device: no memory) and the saved fixture."""
    published = _hf_model(PUBLISHED[name])
    arch = Arch.from_hf_config(PUBLISHED[name])
    assert arch.family == FAMILY_OF[name]
    assert param_count(arch) == sum(p.numel() for p in published.parameters())
    saved = json.loads((family_checkpoints[name] / "config.json").read_text())  # transformers 5's own format
    small = _hf_model(saved)
    assert param_count(Arch.from_hf_config(saved)) == sum(p.numel() for p in small.parameters())


def test_published_sizes_are_the_names_they_go_by():
    sizes = {n: param_count(Arch.from_hf_config(PUBLISHED[n])) for n in PUBLISHED}
    assert round(sizes["smollm2-135m"] / 1e6) == 135
    assert round(sizes["llama-3.2-1b"] / 1e9, 2) == 1.24
    assert round(sizes["qwen2.5-0.5b"] / 1e6) == 494
    assert round(sizes["qwen3-0.6b"] / 1e6) == 596
    assert round(sizes["gemma-3-1b"] / 1e6) == 1000
    assert round(sizes["phi-3-mini-4k"] / 1e9, 2) == 3.82
    assert round(sizes["mistral-7b-v0.3"] / 1e9, 2) == 7.25


def test_architecture_details_are_read_from_each_config(family_checkpoints):
    def arch(name):
        return Arch.from_hf_config(json.loads((family_checkpoints[name] / "config.json").read_text()))

    gemma = arch("gemma-3-1b")
    assert gemma.layer_types == ("sliding_attention", "full_attention") and gemma.sliding_window == 512
    assert gemma.sliding_layers == 1 and gemma.head_dim == 16 and gemma.head_dim_explicit
    assert arch("mistral-7b-v0.1").sliding_window == 4096 and arch("mistral-7b-v0.1").layer_types is None
    assert arch("mistral-7b-v0.1").sliding_layers == 2
    assert arch("mistral-7b-v0.3").sliding_window is None and arch("qwen2.5-0.5b").sliding_window is None
    assert arch("phi-3-mini-4k").sliding_window == 2047
    phi4 = arch("phi-4-mini")
    assert (phi4.rope_type, phi4.partial_rotary_factor, phi4.rotary_dim) == ("longrope", 0.75, 12)
    assert phi4.original_max_position_embeddings == 4096
    llama = arch("llama-3.2-1b")
    assert (llama.rope_type, llama.original_max_position_embeddings) == ("llama3", 8192)
    assert arch("qwen2.5-0.5b").qkv_bias and not arch("qwen2.5-0.5b").o_bias
    assert not arch("qwen3-0.6b").qkv_bias and arch("smollm2-135m").rope_type == "default"
    # the Hub's legacy keys read the same as transformers 5's rewrite of them
    assert Arch.from_hf_config(cut("phi-4-mini")) == phi4
    assert Arch.from_hf_config(cut("gemma-3-1b")) == gemma


def test_qwen_sliding_layers_follow_max_window_layers():
    cfg = {**cut("qwen2.5-0.5b"), "num_hidden_layers": 4, "use_sliding_window": True, "sliding_window": 64,
           "max_window_layers": 2}
    from transformers import AutoConfig

    hf = AutoConfig.for_model("qwen2", **{k: v for k, v in cfg.items() if k not in ("model_type", "architectures")})
    a = Arch.from_hf_config(cfg)
    assert a.layer_types == tuple(hf.layer_types) == ("full_attention",) * 2 + ("sliding_attention",) * 2
    assert a.sliding_window == 64


def test_pruning_keeps_each_layers_attention_kind():
    a = Arch.from_hf_config({**cut("gemma-3-1b"), "num_hidden_layers": 4,
                             "layer_types": ["sliding_attention", "full_attention"] * 2})
    assert prune_arch(a, layer_ratio=1, kv_group_ratio=1, mlp_ratio=1, keep_layers=[1, 2]).arch.layer_types == (
        "full_attention", "sliding_attention")
    only_full = prune_arch(a, layer_ratio=1, kv_group_ratio=1, mlp_ratio=1, keep_layers=[1, 3]).arch
    assert only_full.layer_types is None and only_full.sliding_window is None


@pytest.mark.parametrize("name,targets", [
    ("phi-3-mini-4k", ["q_proj", "k_proj", "v_proj", "o_proj"]),
    ("phi-4-mini", ["q_proj", "gate_proj", "up_proj"]),
    ("qwen3-0.6b", ["q_proj", "v_proj"]),
    ("gemma-3-1b", ["all-linear"]),
])
def test_lora_targets_resolve_to_the_familys_modules_and_their_size(name, targets):
    """peft attaches to the resolved names, and its trainable count is what the estimator says."""
    from peft import LoraConfig, get_peft_model

    config = cut(name)
    arch = Arch.from_hf_config(config)
    resolved = arch.spec.lora_targets(targets)
    assert not resolved.unknown
    model = get_peft_model(_hf_model(config, "cpu"), LoraConfig(r=4, target_modules=resolved.peft_target_modules))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == lora_params(arch, targets, 4)


def test_lora_names_widen_onto_fused_modules_and_unknown_names_are_named():
    phi3 = families.get("phi3")
    got = phi3.lora_targets(["q_proj", "v_proj", "o_proj"])
    assert got.modules == ("qkv_proj", "o_proj") and got.widened == (("q_proj", "qkv_proj"), ("v_proj", "qkv_proj"))
    assert phi3.lora_targets(["q_proj", "k_proj", "v_proj"]).widened == ()
    assert families.get("llama").lora_targets(["qkv_proj", "q_proj"]).unknown == ("qkv_proj",)


def test_fused_projection_shapes():
    a = Arch.from_hf_config(cut("phi-4-mini"))  # 3 heads, 1 kv, head_dim 16, hidden 48
    assert projection_shapes(a) == {"qkv_proj": (48, 80), "o_proj": (48, 48), "gate_up_proj": (48, 256),
                                    "down_proj": (128, 48)}
