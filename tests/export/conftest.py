"""Tiny random checkpoints (Llama, Qwen2) with a byte-level BPE tokenizer, built offline.

Session-scoped: building is deterministic and the tests only read these folders.
`tiny_llama_export` is one shared fp32 export of the Llama checkpoint; tests that
need to change files copy it first.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

VOCAB = 384
SPECIAL_TOKENS = ["<s>", "</s>", "<pad>"]  # ids 0, 1, 2
BOS, EOS, PAD = 0, 1, 2
_WORDS = (
    "the model runs on a small device with cache tokens fast slow memory graph export "
    "onnx data train layer head kernel batch window bundle runtime quantize weights"
).split()


def training_lines(count: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 14))) + "." for _ in range(count)]


def build_tokenizer(path: Path) -> None:
    """A byte-level BPE tokenizer.json (vocab <= VOCAB) trained on generated text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_lines(), trainer)
    assert tokenizer.get_vocab_size() <= VOCAB
    tokenizer.save(str(path))


def build_checkpoint(path: Path, arch: str = "llama", seed: int = 0, **overrides) -> Path:
    """save_pretrained of a random tiny decoder: hidden 64, 2 layers, 4 heads, 2 KV heads."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    settings = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=256,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        tie_word_embeddings=False,
    )
    settings.update(overrides)
    torch.manual_seed(seed)
    model = model_cls(config_cls(**settings))
    with torch.no_grad():  # larger than the 0.02 init so logits are not all near-ties
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.2)
    model.save_pretrained(str(path))
    build_tokenizer(path / "tokenizer.json")
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("tiny_qwen2"), arch="qwen2")


@pytest.fixture(scope="session")
def tiny_llama_export(tiny_llama_dir, tmp_path_factory):
    """One fp32 dynamo export of the tiny Llama, shared read-only by every export test."""
    from slmc.export.onnx_export import export_decoder

    return export_decoder(tiny_llama_dir, tmp_path_factory.mktemp("tiny_llama_onnx"))


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory):
    """build_checkpoint into a fresh folder: factory(arch="llama", seed=0, **config_overrides)."""

    def make(arch: str = "llama", seed: int = 0, **overrides) -> Path:
        return build_checkpoint(tmp_path_factory.mktemp(f"{arch}_{seed}"), arch=arch, seed=seed, **overrides)

    return make
