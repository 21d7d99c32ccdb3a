"""The prune stage: shapes agree with prune_arch, importance is real, slicing is consistent, run folder output."""

from __future__ import annotations

import copy
import inspect
import json
import math
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from slmc.errors import ConfigError, StageError
from slmc.estimate import Arch, param_count, prune_arch
from slmc.layout import LAYOUT
from slmc.load import load_config
from slmc.schema import PruneConfig
from slmc.stages.base import Results
from slmc.stages.prune import prune_model, run_prune
from slmc.stages.results import PruneResult
from slmc.stages.tokenizer import tokenizer_config, train_bpe

torch.set_num_threads(1)
VOCAB = 300


def tiny(family="llama", *, layers=4, heads=4, kv=2, mlp=64, hidden=32, tie=True, seed=0):
    """A small random model; Qwen2 gets nonzero q/k/v biases (transformers initialises them to zero)."""
    config_cls = Qwen2Config if family == "qwen2" else LlamaConfig
    config = config_cls(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        num_key_value_heads=kv, intermediate_size=mlp, vocab_size=VOCAB,
                        max_position_embeddings=256, tie_word_embeddings=tie, initializer_range=0.2)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    if family == "qwen2":
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.2)
    return model


def tokens(n=3000, seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, n)


def ids(batch=2, seq=12, seed=1):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, VOCAB, (batch, seq)))


def logits(model, x):
    with torch.no_grad():
        return model(input_ids=x, use_cache=False).logits


# -- shapes -------------------------------------------------------------------


@pytest.mark.parametrize("importance", ["magnitude", "activation"])
@pytest.mark.parametrize("ratios", [
    dict(layer_ratio=1.0, kv_group_ratio=1.0, mlp_ratio=1.0),
    dict(layer_ratio=0.5, kv_group_ratio=0.5, mlp_ratio=0.5),
    dict(layer_ratio=0.34, kv_group_ratio=0.75, mlp_ratio=0.3),   # mlp 100 * 0.3 -> 32 (multiple of 8)
    dict(layer_ratio=0.9, kv_group_ratio=0.1, mlp_ratio=0.01),    # at least one group, 8 channels
    dict(keep_layers=[0, 2, 5], kv_group_ratio=0.5, mlp_ratio=0.62),
])
def test_shapes_equal_prune_arch(ratios, importance):
    src = tiny(layers=6, heads=8, kv=4, mlp=100, hidden=48)  # 2, 4 or 6 heads all divide 48 (LlamaConfig asks)
    cfg = PruneConfig(importance=importance, **ratios)
    pruned, report = prune_model(src, tokens(), cfg, seed=0)

    plan = prune_arch(Arch.from_hf_config(src.config.to_dict()), layer_ratio=cfg.layer_ratio,
                      kv_group_ratio=cfg.kv_group_ratio, mlp_ratio=cfg.mlp_ratio, keep_layers=cfg.keep_layers)
    a = plan.arch
    c = pruned.config
    assert (c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size, c.head_dim) == (
        a.num_hidden_layers, a.num_attention_heads, a.num_key_value_heads, a.intermediate_size, a.head_dim)
    assert Arch.from_hf_config(c.to_dict()) == a
    assert report.params_after == param_count(a) == sum(p.numel() for p in pruned.parameters())
    for layer in pruned.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        assert attn.q_proj.weight.shape == (a.q_dim, a.hidden_size)
        assert attn.k_proj.weight.shape == attn.v_proj.weight.shape == (a.kv_dim, a.hidden_size)
        assert attn.o_proj.weight.shape == (a.hidden_size, a.q_dim)
        assert mlp.up_proj.weight.shape == mlp.gate_proj.weight.shape == (a.intermediate_size, a.hidden_size)
        assert mlp.down_proj.weight.shape == (a.hidden_size, a.intermediate_size)
    if cfg.keep_layers is not None:
        assert report.kept_layers == [0, 2, 5] and report.dropped_layers == [1, 3, 4]
    assert pruned.lm_head.weight is pruned.model.embed_tokens.weight  # tied stays tied


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_keeping_everything_gives_identical_logits(family):
    src = tiny(family, tie=False)
    pruned, report = prune_model(src, tokens(), PruneConfig(), seed=0)
    assert report.params_after == report.params_before and report.dropped_layers == []
    assert torch.equal(logits(src, ids()), logits(pruned, ids()))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_pruned_model_runs_forward_and_generate(family):
    pruned, _ = prune_model(tiny(family), tokens(), PruneConfig(layer_ratio=0.5, kv_group_ratio=0.5, mlp_ratio=0.5),
                            seed=0)
    assert logits(pruned, ids()).shape == (2, 12, VOCAB)
    out = pruned.generate(ids(1, 5), max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 11)


def masked_source(src, report, channels_kept):
    """The source with every dropped part zeroed: it must compute exactly what the pruned model computes."""
    masked = copy.deepcopy(src)
    c = src.config
    heads = c.num_attention_heads // c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    with torch.no_grad():
        for i, layer in enumerate(masked.model.layers):
            o, down = layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight
            if i in report.dropped_layers:
                o.zero_(); down.zero_()  # the block becomes the identity
                continue
            n = report.kept_layers.index(i)
            for g in range(src.config.num_key_value_heads):
                if g not in report.kv_groups_kept[n]:
                    o[:, g * heads:(g + 1) * heads] = 0
            dropped = [c for c in range(down.shape[1]) if c not in channels_kept[n]]
            down[:, dropped] = 0
    return masked


def kept_channels(src, pruned, report):
    """Which source MLP channels each pruned layer holds, found by matching up_proj rows."""
    out = []
    for n, i in enumerate(report.kept_layers):
        rows = src.model.layers[i].mlp.up_proj.weight
        kept = pruned.model.layers[n].mlp.up_proj.weight
        out.append([int(torch.nonzero((rows == r).all(dim=1))[0]) for r in kept])
    return out


@pytest.mark.parametrize("importance", ["magnitude", "activation"])
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_pruning_equals_zeroing_what_was_dropped(family, importance):
    """Layers, KV groups (with Qwen2's q/k/v biases) and channels are sliced consistently."""
    src = tiny(family, layers=4, heads=8, kv=4, mlp=64)
    cfg = PruneConfig(layer_ratio=0.75, kv_group_ratio=0.5, mlp_ratio=0.5, importance=importance)
    pruned, report = prune_model(src, tokens(), cfg, seed=0)
    channels = kept_channels(src, pruned, report)
    assert all(c == sorted(c) and len(c) == 32 for c in channels)
    torch.testing.assert_close(logits(pruned, ids()), logits(masked_source(src, report, channels), ids()),
                               rtol=1e-5, atol=1e-5)


def test_qwen2_biases_are_sliced_with_their_heads():
    src = tiny("qwen2", heads=8, kv=4)
    pruned, report = prune_model(src, tokens(), PruneConfig(kv_group_ratio=0.5), seed=0)
    hd, per_group = src.config.hidden_size // 8, 2
    for n, i in enumerate(report.kept_layers):
        groups = report.kv_groups_kept[n]
        q_rows = [r for g in groups for r in range(g * per_group * hd, (g + 1) * per_group * hd)]
        kv_rows = [r for g in groups for r in range(g * hd, (g + 1) * hd)]
        s, p = src.model.layers[i].self_attn, pruned.model.layers[n].self_attn
        assert p.q_proj.bias.shape == (4 * hd,) and p.k_proj.bias.shape == p.v_proj.bias.shape == (2 * hd,)
        assert torch.equal(p.q_proj.bias, s.q_proj.bias[q_rows])
        assert torch.equal(p.k_proj.bias, s.k_proj.bias[kv_rows])
        assert torch.equal(p.v_proj.bias, s.v_proj.bias[kv_rows])


# -- importance is real -------------------------------------------------------


@pytest.mark.parametrize("importance", ["magnitude", "activation"])
@pytest.mark.parametrize("identity", [0, 2, 3])
def test_identity_layer_is_the_one_dropped(identity, importance):
    src = tiny(layers=4)
    with torch.no_grad():
        src.model.layers[identity].self_attn.o_proj.weight.zero_()
        src.model.layers[identity].mlp.down_proj.weight.zero_()
    _, report = prune_model(src, tokens(), PruneConfig(layer_ratio=0.75, importance=importance), seed=0)
    assert report.dropped_layers == [identity]
    assert report.layer_importance[identity] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("importance", ["magnitude", "activation"])
def test_silent_kv_group_is_dropped_per_layer(importance):
    src = tiny(layers=3, heads=8, kv=4, hidden=48)
    silent = {0: 3, 1: 1, 2: 0}  # a different group in each layer
    hd = 48 // 8
    with torch.no_grad():
        for layer, g in silent.items():
            src.model.layers[layer].self_attn.v_proj.weight[g * hd:(g + 1) * hd] = 0
    _, report = prune_model(src, tokens(), PruneConfig(kv_group_ratio=0.75, importance=importance), seed=0)
    assert report.kv_groups_kept == [[g for g in range(4) if g != silent[i]] for i in range(3)]


@pytest.mark.parametrize("importance", ["magnitude", "activation"])
def test_silent_mlp_channels_are_dropped(importance):
    src = tiny(layers=2, mlp=64)
    rng = np.random.default_rng(3)
    silent = [sorted(rng.choice(64, 32, replace=False).tolist()) for _ in range(2)]
    with torch.no_grad():
        for layer, channels in zip(src.model.layers, silent):
            layer.mlp.up_proj.weight[channels] = 0
    pruned, report = prune_model(src, tokens(), PruneConfig(mlp_ratio=0.5, importance=importance), seed=0)
    expected = [[c for c in range(64) if c not in s] for s in silent]
    assert kept_channels(src, pruned, report) == expected
    for n, layer in enumerate(pruned.model.layers):
        assert torch.equal(layer.mlp.down_proj.weight, src.model.layers[n].mlp.down_proj.weight[:, expected[n]])


def test_activation_importance_is_deterministic_and_uses_the_data():
    src = tiny(layers=4, heads=8, kv=4)
    cfg = PruneConfig(layer_ratio=0.5, kv_group_ratio=0.5, mlp_ratio=0.5)
    a = prune_model(src, tokens(10_000), cfg, seed=0)[1]
    assert a == prune_model(src, tokens(10_000), cfg, seed=0)[1]
    assert a.calibration_tokens == 32 * 128  # 32 windows at seeded offsets out of 10k tokens
    assert a.layer_importance != prune_model(src, tokens(10_000), cfg, seed=1)[1].layer_importance
    short = prune_model(src, tokens(1000), cfg, seed=0)[1]
    assert short.calibration_tokens == 7 * 128  # short text: every whole window
    assert short.layer_importance != prune_model(src, tokens(1000, seed=5), cfg, seed=0)[1].layer_importance


def test_heads_llama_refuses_are_a_config_error_with_working_ratios():
    """LlamaConfig (transformers 5) wants heads to divide hidden_size even with head_dim explicit; Qwen2 does not."""
    cfg = PruneConfig(kv_group_ratio=0.75, importance="magnitude")  # 3 of 4 groups: 6 heads, hidden 32
    with pytest.raises(ConfigError) as err:
        prune_model(tiny(heads=8, kv=4, hidden=32), None, cfg, seed=0)
    assert err.value.where == "init.prune.kv_group_ratio" and "not a multiple" in err.value.message
    assert "0.25 (1 of 4 groups), 0.5 (2 of 4 groups), 1 (4 of 4 groups)" in err.value.fix
    pruned, _ = prune_model(tiny("qwen2", heads=8, kv=4, hidden=32), None, cfg, seed=0)
    assert pruned.config.num_attention_heads == 6 and logits(pruned, ids()).shape == (2, 12, VOCAB)


def test_activation_without_tokens_is_a_stage_error():
    with pytest.raises(StageError, match="calibration tokens"):
        prune_model(tiny(), None, PruneConfig(layer_ratio=0.5), seed=0)


# -- the stage on a run folder ------------------------------------------------


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    """A run folder after the data and tokenizer stages, and a source checkpoint sharing its vocabulary."""
    root = tmp_path_factory.mktemp("prune_run")
    train = inspect.getsource(textwrap) + inspect.getsource(json.encoder)
    heldout = inspect.getsource(json.decoder)
    tok = train_bpe(train, VOCAB)
    files = {LAYOUT.train_text: train, LAYOUT.heldout_text: heldout, LAYOUT.tokenizer: tok,
             f"{LAYOUT.tokenizer_dir}/tokenizer_config.json": tokenizer_config(tok, 256)}
    for rel, text in files.items():
        (root / "run" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "run" / rel).write_text(text, encoding="utf-8")
    tiny(layers=4, heads=4, kv=2, mlp=64).save_pretrained(root / "src")
    return root


def test_run_prune_writes_a_complete_checkpoint(run_files):
    run_dir, src = run_files / "run", run_files / "src"
    cfg = load_config(["init=prune", f"init.path={src}", "init.prune.layer_ratio=0.5",
                       "init.prune.kv_group_ratio=0.5", "init.prune.mlp_ratio=0.5"])
    result = run_prune(cfg, run_dir, Results())
    out = run_dir / LAYOUT.init_checkpoint
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).is_file(), name
    assert isinstance(result, PruneResult) and result.params_before > result.params_after
    assert math.isfinite(result.heldout_ppl_before) and math.isfinite(result.heldout_ppl_after)
    assert result.heldout_ppl_before > 1 and result.heldout_ppl_after > 1
    assert len(result.dropped_layers) == 2 and result.mlp_width == (64, 32)
    assert PruneResult.from_dict(json.loads(json.dumps(result.to_dict()))).kept_layers == result.kept_layers

    expected = prune_arch(Arch.from_hf_config(json.loads((src / "config.json").read_text())), layer_ratio=0.5,
                          kv_group_ratio=0.5, mlp_ratio=0.5).arch
    reloaded = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True)
    assert Arch.from_hf_config(reloaded.config.to_dict()) == expected
    assert sum(p.numel() for p in reloaded.parameters()) == result.params_after
    assert (out / "tokenizer.json").read_bytes() == (run_dir / LAYOUT.tokenizer).read_bytes()
    assert not list(run_dir.glob(".init.*"))  # the staging folder is gone


def test_run_prune_magnitude_needs_no_training_text(run_files, tmp_path):
    run_dir = tmp_path / "run"
    for rel in (LAYOUT.heldout_text, LAYOUT.tokenizer):
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / rel).write_bytes((run_files / "run" / rel).read_bytes())
    cfg = load_config(["init=prune", f"init.path={run_files / 'src'}", "init.prune.importance=magnitude",
                       "init.prune.keep_layers=[1,3]"])
    result = run_prune(cfg, run_dir, Results())
    assert result.kept_layers == [1, 3] and result.calibration_tokens == 0
    assert (run_dir / LAYOUT.init_checkpoint / "model.safetensors").is_file()


def test_missing_run_inputs_are_a_stage_error(run_files, tmp_path):
    cfg = load_config(["init=prune", f"init.path={run_files / 'src'}"])
    with pytest.raises(StageError, match="data/train.txt"):
        run_prune(cfg, tmp_path, Results())


@pytest.mark.parametrize("overrides, where, words", [
    ([], "init.path", "needs the checkpoint"),
    (["init.path=/nonexistent/model"], "init.path", "no config.json"),
    (["init.path={src}", "init.prune.keep_layers=[0,9]"], "init.prune.keep_layers", "out of range"),
    (["init.path={src}", "init.prune.keep_layers=[1,1]"], "init.prune.keep_layers", "repeats"),
])
def test_errors_name_the_config_path(run_files, overrides, where, words):
    cfg = load_config(["init=prune", *(o.format(src=run_files / "src") for o in overrides)])
    with pytest.raises(ConfigError) as err:
        run_prune(cfg, run_files / "run", Results())
    assert err.value.where == where and words in err.value.message


def test_an_unsupported_architecture_is_a_config_error_naming_the_families():
    from slmc.stages.prune import plan_for

    with pytest.raises(ConfigError) as err:
        plan_for({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4}, PruneConfig(layer_ratio=0.5))
    assert err.value.where == "init.path" and "GPT-2" in err.value.message
    assert all(name in err.value.fix for name in ("llama", "qwen2", "qwen3", "gemma3", "phi3", "mistral"))
