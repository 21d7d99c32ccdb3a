"""Helpers for rule tests: run one rule on a composed config; tiny checkpoints and tokenizers on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models

from slmc.load import load_config
from slmc.rules._engine import run_rules

SMALL_LLAMA = dict(
    model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=256, num_hidden_layers=4,
    num_attention_heads=8, num_key_value_heads=4, intermediate_size=768, vocab_size=4096,
    max_position_embeddings=512, tie_word_embeddings=False,
)


def _check(overrides, rule_id, severity=None):
    """Violations of one rule (of one severity, if given) for a config composed from `overrides`."""
    found = run_rules(load_config(list(overrides)), only=[rule_id])
    return [v for v in found if severity is None or v.severity == severity]


@pytest.fixture
def check():
    """check(overrides, rule_id, severity=None) -> [Violation]."""
    return _check


@pytest.fixture
def tokenizer_file():
    """tokenizer_file(path, size, prefix='t', unigram=False) -> path of a real tokenizer.json."""
    return _write_tokenizer


def _write_tokenizer(path: Path, size: int, prefix: str = "t", unigram: bool = False) -> Path:
    """A real `tokenizers` tokenizer.json whose ids are 0..size-1 (the last one an added special token)."""
    vocab = {f"{prefix}{i}": i for i in range(size - 1)}
    if unigram:
        model = models.Unigram([(tok, -1.0) for tok in vocab], unk_id=0, byte_fallback=False)
    else:
        model = models.WordLevel(vocab, unk_token=f"{prefix}0")
    tok = Tokenizer(model)
    tok.add_special_tokens(["<|eos|>"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def write_safetensors(path: Path) -> Path:
    """A real, tiny safetensors file: the rules read its header, never the weights."""
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"model.norm.weight": np.ones(4, dtype=np.float32)}, str(path))
    return path


@pytest.fixture
def make_checkpoint(tmp_path):
    """make_checkpoint(name, weights=True, tokenizer_size=None, **config_overrides) -> folder path."""

    def make(name="ckpt", weights=True, tokenizer_size=None, tokenizer_prefix="t", **overrides):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({**SMALL_LLAMA, **overrides}))
        if weights:
            write_safetensors(folder / "model.safetensors")
        if tokenizer_size:
            _write_tokenizer(folder / "tokenizer.json", tokenizer_size, tokenizer_prefix)
        return folder

    return make
