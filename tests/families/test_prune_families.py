"""init=prune for every family, on checkpoints transformers wrote from the published shapes.

Each case is a published config cut to 4 layers, with enough KV groups to drop one (the
published query/KV ratio kept where the width allows) and a small sliding window, so that
12-token inputs cross it and a layer pruned into the wrong attention kind changes the
logits. The pruned model must reload with `AutoModelForCausalLM.from_pretrained` and compute
exactly what the source computes with the dropped parts zeroed: a dropped layer is the
identity once its o_proj and down_proj are zero, a dropped KV group once its query heads'
o_proj columns are, an MLP channel once its down_proj column is.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from slmc import families
from slmc.checkpoint import inspect_checkpoint
from slmc.errors import ConfigError
from slmc.estimate import Arch, kind_quota, prune_arch
from slmc.load import load_config
from slmc.rules._engine import run_rules
from slmc.schema import PruneConfig
from slmc.stages.prune import plan_for, prune_model

from .conftest import VOCAB, cut, save_checkpoint

torch.set_num_threads(1)
S, F = "sliding_attention", "full_attention"
WINDOW = 4
"""Sliding window of the test configs: shorter than the 12-token inputs."""

# case -> (published config, overrides): 4 layers, whole KV groups to drop, the family's window kind
CASES: dict[str, tuple[str, dict]] = {
    "llama": ("llama-3.2-1b", dict(num_attention_heads=4, num_key_value_heads=2, hidden_size=64)),
    "qwen2": ("qwen2.5-0.5b", dict(num_attention_heads=14, num_key_value_heads=2, hidden_size=112,
                                   use_sliding_window=True, sliding_window=WINDOW, max_window_layers=2)),
    "qwen3": ("qwen3-0.6b", dict(num_attention_heads=4, num_key_value_heads=2, hidden_size=64)),
    "gemma3": ("gemma-3-1b", dict(num_attention_heads=8, num_key_value_heads=2, hidden_size=64,
                                  sliding_window=WINDOW, layer_types=[S, S, F, S])),
    "phi3": ("phi-3-mini-4k", dict(num_attention_heads=4, num_key_value_heads=4, hidden_size=64,
                                   sliding_window=WINDOW)),
    "phi4": ("phi-4-mini", dict(num_attention_heads=6, num_key_value_heads=2, hidden_size=96)),
    "mistral": ("mistral-7b-v0.1", dict(num_attention_heads=4, num_key_value_heads=2, hidden_size=64,
                                        sliding_window=WINDOW)),
}
FAMILY_OF_CASE = {"phi4": "phi3"}
KEEPS_HEADS = {"phi4"}
"""Phi-4-mini's longrope ties its head count to hidden_size in transformers: no KV groups are pruned."""



def ratios(importance: str = "activation", case: str = "") -> PruneConfig:
    """Half the layers, half the KV groups (where the family can drop them), half the MLP channels."""
    kv = 1.0 if case in KEEPS_HEADS else 0.5
    return PruneConfig(layer_ratio=0.5, kv_group_ratio=kv, mlp_ratio=0.5, importance=importance)


def case_config(case: str, layers: int = 4, **extra) -> dict:
    published, overrides = CASES[case]
    return {**cut(published), "num_hidden_layers": layers, "intermediate_size": 64, **overrides, **extra}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("prune_families")
    return {case: save_checkpoint(root / case, case_config(case)) for case in CASES}


def load(folder: Path):
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True).eval()


def tokens(n=2000, seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, n)


def ids(batch=2, seq=12, seed=1):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, VOCAB, (batch, seq)))


def logits(model, x):
    with torch.no_grad():
        return model(input_ids=x, use_cache=False).logits


def weights(layer, config) -> dict[str, torch.Tensor]:
    """q, k, v, o, gate, up, down of one layer, cut out of Phi-3's fused weights by hand."""
    attn, mlp = layer.self_attn, layer.mlp
    if hasattr(attn, "qkv_proj"):
        hd = config.head_dim if getattr(config, "head_dim", None) else config.hidden_size // config.num_attention_heads
        q_rows, kv_rows = config.num_attention_heads * hd, config.num_key_value_heads * hd
        qkv = attn.qkv_proj.weight
        q, k, v = qkv[:q_rows], qkv[q_rows:q_rows + kv_rows], qkv[q_rows + kv_rows:]
    else:
        q, k, v = attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight
    if hasattr(mlp, "gate_up_proj"):
        width = config.intermediate_size
        gate, up = mlp.gate_up_proj.weight[:width], mlp.gate_up_proj.weight[width:]
    else:
        gate, up = mlp.gate_proj.weight, mlp.up_proj.weight
    return dict(q=q, k=k, v=v, o=attn.o_proj.weight, gate=gate, up=up, down=mlp.down_proj.weight)


def kept_channels(src, pruned, report) -> list[list[int]]:
    """The source MLP channels each pruned layer holds, found by matching up rows."""
    out = []
    for n, i in enumerate(report.kept_layers):
        rows = weights(src.model.layers[i], src.config)["up"]
        kept = weights(pruned.model.layers[n], pruned.config)["up"]
        out.append([int(torch.nonzero((rows == r).all(dim=1))[0]) for r in kept])
    return out


def masked(src, report, channels):
    """The source with every dropped part zeroed (its layers keep their own attention kinds)."""
    model = copy.deepcopy(src)
    c = src.config
    per_group = c.num_attention_heads // c.num_key_value_heads * src.model.layers[0].self_attn.head_dim
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            o, down = layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight
            if i in report.dropped_layers:
                o.zero_()
                down.zero_()
                continue
            n = report.kept_layers.index(i)
            for g in range(c.num_key_value_heads):
                if g not in report.kv_groups_kept[n]:
                    o[:, g * per_group:(g + 1) * per_group] = 0
            down[:, [ch for ch in range(down.shape[1]) if ch not in channels[n]]] = 0
    return model


def source_types(config) -> list[str] | None:
    return list(config.layer_types) if getattr(config, "layer_types", None) else None


# -- every family: prune, save, reload with transformers, equal the masked source --


@pytest.mark.parametrize("importance", ["magnitude", "activation"])
@pytest.mark.parametrize("case", list(CASES))
def test_pruned_checkpoint_reloads_and_equals_the_masked_source(case, importance, checkpoints, tmp_path):
    src = load(checkpoints[case])
    cfg = ratios(importance, case)
    pruned, report = prune_model(src, tokens(), cfg, seed=0)
    assert len(report.kept_layers) == 2
    assert [len(g) for g in report.kv_groups_kept] == [round(src.config.num_key_value_heads * cfg.kv_group_ratio)] * 2
    channels = kept_channels(src, pruned, report)
    assert all(c == sorted(c) and len(c) == 32 for c in channels)

    pruned.save_pretrained(str(tmp_path))
    reloaded = load(tmp_path)
    assert type(reloaded) is type(src)
    x = ids()
    assert torch.equal(logits(reloaded, x), logits(pruned, x))
    torch.testing.assert_close(logits(reloaded, x), logits(masked(src, report, channels), x), rtol=1e-5, atol=1e-5)

    # the saved config.json is a valid checkpoint of the family, with the shapes the rule predicts
    facts = inspect_checkpoint(str(tmp_path), weights=False)
    assert [f.message for f in facts.findings if f.severity == "error"] == []
    raw = json.loads((tmp_path / "config.json").read_text())
    assert facts.family is families.for_config(raw) and facts.family.name == FAMILY_OF_CASE.get(case, case)
    expected = prune_arch(Arch.from_hf_config(src.config.to_dict()), layer_ratio=0.5, kv_group_ratio=cfg.kv_group_ratio,
                          mlp_ratio=0.5, keep_layers=report.kept_layers).arch
    assert facts.arch == Arch.from_hf_config(raw) == expected
    assert sum(p.numel() for p in reloaded.parameters()) == report.params_after

    # each kept layer keeps its attention kind
    before = source_types(src.config)
    if before is not None:
        assert list(reloaded.config.layer_types) == [before[i] for i in report.kept_layers]
    for n, i in enumerate(report.kept_layers):
        kind = getattr(reloaded.model.layers[n].self_attn, "sliding_window", None)
        assert kind == getattr(src.model.layers[i].self_attn, "sliding_window", None)


def test_a_window_pattern_mistake_would_show_in_the_logits(checkpoints):
    """The equivalence above can see layer kinds: the same weights with the kept layers' kinds swapped differ."""
    src = load(checkpoints["gemma3"])
    pruned, report = prune_model(src, None, PruneConfig(keep_layers=[1, 2], importance="magnitude"), seed=0)
    assert list(pruned.config.layer_types) == [S, F]
    swapped_config = copy.deepcopy(pruned.config)
    swapped_config.layer_types = [F, S]
    swapped = AutoModelForCausalLM.from_config(swapped_config, dtype=torch.float32).eval()
    swapped.load_state_dict(pruned.state_dict())
    assert not torch.allclose(logits(swapped, ids()), logits(pruned, ids()), atol=1e-3)


@pytest.mark.parametrize("case", ["qwen3", "gemma3"])
def test_qk_norm_is_per_head_dim_and_kept_whole(case, checkpoints):
    src = load(checkpoints[case])
    pruned, report = prune_model(src, None, ratios("magnitude"), seed=0)
    assert pruned.config.num_attention_heads == src.config.num_attention_heads // 2
    for n, i in enumerate(report.kept_layers):
        s, p = src.model.layers[i].self_attn, pruned.model.layers[n].self_attn
        for norm in ("q_norm", "k_norm"):
            assert getattr(p, norm).weight.shape == (p.head_dim,) == (16,)
            assert torch.equal(getattr(p, norm).weight, getattr(s, norm).weight)


def test_qwen2_biases_follow_their_kv_groups(checkpoints):
    src = load(checkpoints["qwen2"])
    with torch.no_grad():  # transformers starts biases at zero: make them tell the groups apart
        for layer in src.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    pruned, report = prune_model(src, tokens(), ratios(), seed=0)
    hd, per_group = 8, 7  # Qwen2.5-0.5B's 7 query heads per KV head
    for n, i in enumerate(report.kept_layers):
        (g,) = report.kv_groups_kept[n]
        s, p = src.model.layers[i].self_attn, pruned.model.layers[n].self_attn
        assert torch.equal(p.q_proj.bias, s.q_proj.bias[g * per_group * hd:(g + 1) * per_group * hd])
        assert torch.equal(p.k_proj.bias, s.k_proj.bias[g * hd:(g + 1) * hd])
        assert torch.equal(p.v_proj.bias, s.v_proj.bias[g * hd:(g + 1) * hd])
    channels = kept_channels(src, pruned, report)
    torch.testing.assert_close(logits(pruned, ids()), logits(masked(src, report, channels), ids()),
                               rtol=1e-5, atol=1e-5)


def test_phi3_fused_weights_are_sliced_block_by_block(checkpoints):
    src = load(checkpoints["phi3"])
    pruned, report = prune_model(src, None, ratios("magnitude"), seed=0)
    hd = 16
    for n, i in enumerate(report.kept_layers):
        heads = [r for g in report.kv_groups_kept[n] for r in range(g * hd, (g + 1) * hd)]
        s, p = weights(src.model.layers[i], src.config), weights(pruned.model.layers[n], pruned.config)
        for name in ("q", "k", "v"):  # MHA: each head is its own group
            assert torch.equal(p[name], s[name][heads])
        assert torch.equal(p["o"], s["o"][:, heads])
        assert pruned.model.layers[n].self_attn.qkv_proj.weight.shape == (3 * len(heads), 64)
    channels = kept_channels(src, pruned, report)
    for n, i in enumerate(report.kept_layers):
        s, p = weights(src.model.layers[i], src.config), weights(pruned.model.layers[n], pruned.config)
        assert torch.equal(p["gate"], s["gate"][channels[n]]) and torch.equal(p["down"], s["down"][:, channels[n]])


# -- importance reads every family's weights ---------------------------------------


@pytest.mark.parametrize("importance", ["magnitude", "activation"])
@pytest.mark.parametrize("case", ["llama", "qwen3", "gemma3", "phi3", "mistral"])
def test_silent_groups_and_channels_are_the_ones_dropped(case, importance, checkpoints):
    src = load(checkpoints[case])
    c = src.config
    hd = src.model.layers[0].self_attn.head_dim
    silent_group = {i: i % c.num_key_value_heads for i in range(4)}
    rng = np.random.default_rng(3)
    silent_channels = [sorted(rng.choice(64, 32, replace=False).tolist()) for _ in range(4)]
    with torch.no_grad():
        for i, layer in enumerate(src.model.layers):
            w = weights(layer, c)
            g = silent_group[i]
            w["v"][g * hd:(g + 1) * hd] = 0  # a group that reads nothing
            w["up"][silent_channels[i]] = 0
    cfg = PruneConfig(kv_group_ratio=0.5 if c.num_key_value_heads == 2 else 0.75, mlp_ratio=0.5,
                      importance=importance)
    pruned, report = prune_model(src, tokens(), cfg, seed=0)
    assert report.kept_layers == [0, 1, 2, 3]
    for i in range(4):
        assert silent_group[i] not in report.kv_groups_kept[i]
        assert len(report.kv_groups_kept[i]) == c.num_key_value_heads - 1
    assert kept_channels(src, pruned, report) == [[ch for ch in range(64) if ch not in s] for s in silent_channels]


# -- the window pattern -------------------------------------------------------------


def test_kind_quota_keeps_each_kinds_share_and_one_of_each():
    gemma = tuple(S if (i + 1) % 6 else F for i in range(26))
    assert kind_quota(gemma, 13) == {S: 11, F: 2}
    assert kind_quota(gemma, 4) == {S: 3, F: 1}  # 4 / 26 of 4 full layers rounds to 1
    assert kind_quota(gemma, 2) == {S: 1, F: 1}  # a full layer stays while two layers are kept
    assert kind_quota(gemma, 1) == {S: 1, F: 0}
    assert kind_quota((F, F, S, S), 3) == {F: 2, S: 1}
    assert sum(kind_quota(gemma, 7).values()) == 7


def test_ratio_pruning_keeps_a_full_attention_layer_importance_would_drop(tmp_path):
    """Gemma 3's sliding/full mix survives a ratio: the weakest full layer goes, the other full one stays."""
    config = case_config("gemma3", layers=6, layer_types=[S, S, F, S, S, F])
    src = load(save_checkpoint(tmp_path / "gemma6", config))
    with torch.no_grad():
        for i in (2, 5):  # both full layers matter least; layer 2 least of all
            scale = 0.0 if i == 2 else 0.01
            src.model.layers[i].self_attn.o_proj.weight.mul_(scale)
            src.model.layers[i].mlp.down_proj.weight.mul_(scale)
    for importance in ("magnitude", "activation"):
        pruned, report = prune_model(src, tokens(), PruneConfig(layer_ratio=0.5, importance=importance), seed=0)
        assert 5 in report.kept_layers and 2 in report.dropped_layers and len(report.kept_layers) == 3
        assert list(pruned.config.layer_types) == [config["layer_types"][i] for i in report.kept_layers]
        assert list(pruned.config.layer_types).count(F) == 1
        plan = prune_arch(Arch.from_hf_config(config), layer_ratio=0.5, kv_group_ratio=1, mlp_ratio=1)
        assert Arch.from_hf_config(pruned.config.to_dict()).sliding_layers == plan.arch.sliding_layers == 2


@pytest.mark.parametrize("keep, pattern", [([0, 1, 2], 3), ([1, 2, 3], 2), ([0, 1], 6), ([2, 3], None)])
def test_gemma_pattern_field_describes_the_kept_layers(keep, pattern, checkpoints, tmp_path):
    """sliding_window_pattern (every n-th layer attends fully) stays true: the published 6 where it
    still is, the kept layers' own n where one fits, null where none does."""
    src = load(checkpoints["gemma3"])  # [S, S, F, S], published with sliding_window_pattern 6
    pruned, _ = prune_model(src, None, PruneConfig(keep_layers=keep, importance="magnitude"), seed=0)
    pruned.save_pretrained(str(tmp_path))
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["layer_types"] == [[S, S, F, S][i] for i in keep]
    assert raw["sliding_window_pattern"] == raw["_sliding_window_pattern"] == pattern
    if pattern is not None:  # a reader that knows only the pattern derives the same kinds
        assert raw["layer_types"] == [S if (i + 1) % pattern else F for i in range(len(keep))]
    assert type(load(tmp_path)) is type(src)


def test_qwen_max_window_layers_describes_the_kept_layers(checkpoints):
    """Qwen derives layer_types from max_window_layers when a config lacks them: both must agree."""
    src = load(checkpoints["qwen2"])  # layers 0, 1 full; 2, 3 sliding
    for keep in ([0, 2], [1, 2, 3], [2, 3], [0, 1]):
        pruned, _ = prune_model(src, None, PruneConfig(keep_layers=keep, importance="magnitude"), seed=0)
        data = {k: v for k, v in pruned.config.to_dict().items() if k != "layer_types"}
        derived = AutoConfig.for_model("qwen2", **{k: v for k, v in data.items() if k != "model_type"}).layer_types
        assert list(derived) == list(pruned.config.layer_types) == [[F, F, S, S][i] for i in keep]


def test_raw_hub_config_without_layer_types_is_sliced_as_transformers_reads_it():
    """A Hub config.json with only sliding_window_pattern: the pruned one spells the kept kinds out."""
    from slmc.stages.prune_build import pruned_config

    raw = {k: v for k, v in case_config("gemma3", layers=6).items() if k != "layer_types"}
    raw["sliding_window_pattern"] = 3  # layers 2 and 5 attend fully
    plan = plan_for(raw, PruneConfig(keep_layers=[1, 2, 4]))
    config = pruned_config(raw, plan.arch, plan.kept_layers)
    assert list(config.layer_types) == [S, F, S] and plan.arch.layer_types == (S, F, S)


# -- the rules and the stage agree on what each family can prune ---------------------


PRUNE_RULES = ["prune.keeps_divisibility", "prune.family_axes", "prune.keeps_full_attention"]


@pytest.mark.parametrize("case", list(CASES))
def test_check_passes_for_every_family(case, checkpoints):
    kv = ratios(case=case).kv_group_ratio
    cfg = load_config(["init=prune", f"init.path={checkpoints[case]}", f"init.prune.kv_group_ratio={kv}",
                       "init.prune.mlp_ratio=0.5"])
    assert run_rules(cfg, only=PRUNE_RULES) == []


def test_longrope_phi3_keeps_its_heads_at_check_and_in_the_stage(checkpoints):
    """Phi3Config checks longrope factors against hidden_size // heads (not head_dim): dropping heads cannot load."""
    overrides = ["init=prune", f"init.path={checkpoints['phi4']}", "init.prune.kv_group_ratio=0.5"]
    (v,) = run_rules(load_config(overrides), only=PRUNE_RULES)
    assert v.rule == "prune.family_axes" and v.severity == "error" and v.paths[0] == "init.prune.kv_group_ratio"
    assert "phi3" in v.message and "longrope" in v.message and "96 / 6" in v.message
    with pytest.raises(ConfigError) as err:
        plan_for(json.loads((checkpoints["phi4"] / "config.json").read_text()), PruneConfig(kv_group_ratio=0.5))
    assert err.value.where == "init.prune.kv_group_ratio" and "longrope" in err.value.message
    assert run_rules(load_config(overrides[:2]), only=PRUNE_RULES) == []
    pruned_heads = {k: v for k, v in case_config("phi4").items() if k not in ("model_type", "architectures")}
    pruned_heads.update(num_attention_heads=3, num_key_value_heads=1, head_dim=16)
    with pytest.raises(Exception, match="short_factor"):  # what the refusal spares the user (a strict-dataclass error)
        AutoConfig.for_model("phi3", **pruned_heads)
    # the same family without longrope drops heads (test_pruned_checkpoint_reloads_and_equals_the_masked_source[phi3])
    assert run_rules(load_config(["init=prune", f"init.path={checkpoints['phi3']}", "init.prune.kv_group_ratio=0.5"]),
                     only=PRUNE_RULES) == []


def test_an_axis_the_family_does_not_declare_is_refused_by_rule_and_stage(checkpoints, monkeypatch):
    gemma = families.get("gemma3")
    monkeypatch.setitem(families.FAMILIES, "gemma3", dataclasses.replace(gemma, prune_axes=("layers", "mlp_channels")))
    overrides = ["init=prune", f"init.path={checkpoints['gemma3']}", "init.prune.kv_group_ratio=0.5"]
    (v,) = run_rules(load_config(overrides), only=["prune.family_axes"])
    assert v.severity == "error" and "gemma3" in v.message and "kv_groups" in v.message
    assert "init.prune.kv_group_ratio" in v.paths and "layers, mlp_channels" in v.message
    with pytest.raises(ConfigError) as err:
        plan_for(json.loads((checkpoints["gemma3"] / "config.json").read_text()), PruneConfig(kv_group_ratio=0.5))
    assert err.value.where == "init.prune.kv_group_ratio" and "gemma3" in err.value.message
    assert err.value.fix == "set init.prune.kv_group_ratio=1.0"
    assert run_rules(load_config(overrides[:2]), only=["prune.family_axes"]) == []  # layers/mlp: still fine


# -- end to end, for the families that export today ---------------------------------

E2E = ["train=none", "data.max_chars=40000", "export.max_seq_len=64", "generation.max_new_tokens=16"]


@pytest.mark.parametrize("name", [
    "qwen3-0.6b",
    pytest.param("smollm2-135m", marks=pytest.mark.slow),
    pytest.param("qwen2.5-0.5b", marks=pytest.mark.slow),
    pytest.param("mistral-7b-v0.3", marks=pytest.mark.slow),
])
def test_compile_init_prune_train_none(name, family_checkpoints, tmp_path):
    """`slmc compile init=prune init.path=DIR train=none`: check, prune, export with parity, bundle."""
    from slmc.pipeline import compile_config

    source = family_checkpoints[name]
    summary = compile_config(load_config(["init=prune", f"init.path={source}", f"out_dir={tmp_path}", *E2E]),
                             quiet=True)
    prune = summary.stages["prune"]
    assert prune.params_after < prune.params_before and len(prune.kept_layers) == 1
    assert prune.heldout_ppl_after > 1 and prune.source == str(source)
    shipped = json.loads((summary.run_dir / "checkpoint" / "config.json").read_text())
    src = json.loads((source / "config.json").read_text())
    assert (shipped["model_type"], shipped["num_hidden_layers"]) == (src["model_type"], 1)
    assert shipped["intermediate_size"] == prune_arch(Arch.from_hf_config(src), layer_ratio=0.5, kv_group_ratio=1,
                                                      mlp_ratio=0.5).arch.intermediate_size
    export = summary.stages["export"]
    assert export.parity["ok"] and export.model["num_hidden_layers"] == 1
    manifest = json.loads((summary.bundle / "manifest.json").read_text())
    assert manifest["model"]["num_hidden_layers"] == 1 and manifest["model"]["parameters"] == prune.params_after
