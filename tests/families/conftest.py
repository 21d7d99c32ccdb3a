"""Checkpoints of every family, written by transformers itself from the published configs.

`PUBLISHED` holds the config.json values of the checkpoints people deploy, as the Hub
serves them (legacy `rope_scaling`/`rope_theta` keys included). `cut()` keeps what makes
each architecture itself (GQA ratio, head_dim where it is its own field, RoPE scaling,
windows and layer pattern, biases, tying, soft-capping settings) and shrinks the sizes: 2
layers, width about 64, a 320-token vocabulary served by a real byte-level tokenizer.
transformers builds the model from that config (`AutoConfig.for_model` +
`AutoModelForCausalLM.from_config`) and writes it with `save_pretrained`, so the folders
are exactly what a user's checkpoint looks like, only small.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from slmc.families.published import PUBLISHED  # noqa: F401  (the published shapes, shared with bench/)

VOCAB = 320
"""256 byte tokens + specials, padded: every id the tokenizer emits is below this."""
BOS, EOS, PAD = 256, 257, 258

FAMILY_OF = {"smollm2-135m": "llama", "llama-3.2-1b": "llama", "qwen2.5-0.5b": "qwen2", "qwen3-0.6b": "qwen3",
             "gemma-3-1b": "gemma3", "phi-3-mini-4k": "phi3", "phi-4-mini": "phi3", "mistral-7b-v0.3": "mistral",
             "mistral-7b-v0.1": "mistral"}

# (query heads, KV heads) of the cut: the published GQA ratio with head_dim 16
HEADS = {"smollm2-135m": (3, 1), "llama-3.2-1b": (4, 1), "qwen2.5-0.5b": (7, 1), "qwen3-0.6b": (4, 2),
         "gemma-3-1b": (4, 1), "phi-3-mini-4k": (4, 4), "phi-4-mini": (3, 1), "mistral-7b-v0.3": (4, 1),
         "mistral-7b-v0.1": (4, 1)}
HEAD_DIM = 16

UNSUPPORTED: dict[str, dict] = {
    "olmoe": dict(  # allenai/OLMoE-1B-7B-0924, cut: a mixture of experts
        model_type="olmoe", architectures=["OlmoeForCausalLM"], hidden_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, intermediate_size=32, num_experts=4, num_experts_per_tok=2,
        vocab_size=VOCAB, max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-5,
        bos_token_id=None, eos_token_id=EOS, pad_token_id=PAD,
    ),
    "gpt2": dict(  # openai-community/gpt2, cut
        model_type="gpt2", architectures=["GPT2LMHeadModel"], n_embd=64, n_layer=2, n_head=4, n_positions=1024,
        vocab_size=VOCAB, bos_token_id=EOS, eos_token_id=EOS,
    ),
}


def cut(name: str) -> dict:
    """The published config of `name`, depth cut to 2 layers and widths to ~64, its kind kept."""
    pub = dict(PUBLISHED[name])
    heads, kv = HEADS[name]
    hidden = heads * HEAD_DIM if 64 % heads else 64
    ratio = pub["intermediate_size"] / pub["hidden_size"]
    small = dict(
        num_hidden_layers=2, hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv,
        intermediate_size=max(8, round(hidden * ratio / 8) * 8), vocab_size=VOCAB,
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD if "pad_token_id" in pub else None,
    )
    if "head_dim" in pub:
        small["head_dim"] = HEAD_DIM
    if "query_pre_attn_scalar" in pub:  # published as head_dim (256) on Gemma 3 1B
        small["query_pre_attn_scalar"] = HEAD_DIM
    if pub.get("model_type") == "gemma3_text":  # 2 layers keep both kinds of the 5:1 sliding/full pattern
        small["layer_types"] = ["sliding_attention", "full_attention"]
    if name == "qwen2.5-0.5b":
        small["max_window_layers"] = 2
    scaling = pub.get("rope_scaling")
    if scaling and "long_factor" in scaling:  # one factor per rotated channel pair
        pairs = int(HEAD_DIM * pub.get("partial_rotary_factor", 1.0)) // 2
        small["rope_scaling"] = {**scaling, "long_factor": [1.0] * pairs, "short_factor": [1.0] * pairs}
    return {**pub, **small}


def write_tokenizer(folder: Path) -> None:
    """A byte-level BPE over the 256 bytes (no merges) + bos/eos/pad: encodes any text, ids < VOCAB."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|bos|>", "<|eos|>", "<|pad|>"])
    assert tok.token_to_id("<|bos|>") == BOS and tok.token_to_id("<|pad|>") == PAD
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|bos|>", "eos_token": "<|eos|>",
        "pad_token": "<|pad|>", "model_max_length": 4096,
    }))


def save_checkpoint(folder: Path, config: dict) -> Path:
    """transformers builds the model of `config` and saves it as a checkpoint folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    values = {k: v for k, v in config.items() if k not in ("model_type", "architectures", "auto_map")}
    hf_config = AutoConfig.for_model(config["model_type"], **values)
    hf_config.architectures = config["architectures"]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf_config)
    model.save_pretrained(str(folder))
    if "auto_map" in config:  # save_pretrained drops keys the class does not know; the Hub's file has it
        data = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**data, "auto_map": config["auto_map"]}, indent=2))
    write_tokenizer(folder)
    return folder


def save_raw_checkpoint(folder: Path, config: dict) -> Path:
    """An unsupported architecture as its checkpoint folder: config.json + weights + tokenizer.

    transformers builds OLMoE and GPT-2 too; the weights do not matter to `slmc check`.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    values = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
    hf_config = AutoConfig.for_model(config["model_type"], **values)
    hf_config.architectures = config["architectures"]
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(hf_config).save_pretrained(str(folder))
    write_tokenizer(folder)
    return folder


@pytest.fixture(scope="session")
def family_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """name -> checkpoint folder, for every entry of PUBLISHED (built once per test session)."""
    root = tmp_path_factory.mktemp("families")
    return {name: save_checkpoint(root / name, cut(name)) for name in PUBLISHED}


@pytest.fixture(scope="session")
def unsupported_checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("unsupported")
    return {name: save_raw_checkpoint(root / name, cfg) for name, cfg in UNSUPPORTED.items()}


@pytest.fixture
def checkpoint_copy(tmp_path, family_checkpoints):
    """checkpoint_copy(name) -> a private copy of a family checkpoint that a test may break."""

    def copy(name: str = "smollm2-135m") -> Path:
        dest = tmp_path / name
        shutil.copytree(family_checkpoints[name], dest)
        return dest

    return copy


def slmc_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_hub_cache(hub_cache: Path, repo_id: str, source: Path, *, commit: str = HUB_COMMIT,
                    names: tuple[str, ...] | None = None, listing: bool = False) -> Path:
    """Put `source`'s files (or `names` of them) into a Hub cache the way huggingface_hub lays it out:
    models--org--name/blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>, refs/main.
    `listing` also writes huggingface_hub's cached tree listing of every file of `source` (what an
    online download leaves behind), so files can be listed without being downloaded."""
    import hashlib

    from huggingface_hub.file_download import repo_folder_name

    repo = hub_cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    entries = {}
    for path in sorted(source.iterdir()):
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        entries[path.name] = (len(data), digest)
        if names is not None and path.name not in names:
            continue
        blob = repo / "blobs" / digest
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / path.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    if listing:
        from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache

        write_tree_cache(str(repo), commit, {n: TreeCacheEntry(size=s, blob_id=d[:40]) for n, (s, d) in entries.items()})
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hub cache in a temporary HF_HOME, offline; huggingface_hub (already imported by other
    tests) is pointed at it too. Returns the HF_HUB_CACHE folder."""
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    for key, value in (("HF_HOME", str(home)), ("HF_HUB_CACHE", str(cache)), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache
