"""A tiny Llama trained on a learnable pattern, exported once, for accuracy gates.

Random weights make quantization accuracy checks meaningless (near-tied logits
flip under any noise), so this model is trained for ~2 s on arithmetic
sequences (start + step * t mod vocab, step in 1..3) until it predicts them; a
quantized copy must keep doing so. Import the fixtures into a test module:
`from ._fixtures_quant import held_out_ids, trained_export`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

VOCAB = 256
SEQ = 32


def arithmetic_sequences(count: int, length: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    start = rng.integers(0, VOCAB, (count, 1))
    step = rng.integers(1, 4, (count, 1))
    return ((start + step * np.arange(length)) % VOCAB).astype(np.int64)


def train_tiny_llama(path: Path, steps: int = 200) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(steps):
        batch = torch.from_numpy(arithmetic_sequences(16, SEQ, seed=1000 + step))
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def trained_export(tmp_path_factory):
    """ExportedModel (H3a's export_decoder) of the trained tiny Llama."""
    from slmc.export.onnx_export import export_decoder

    torch.set_num_threads(1)
    checkpoint = train_tiny_llama(tmp_path_factory.mktemp("trained_llama"))
    return export_decoder(checkpoint, tmp_path_factory.mktemp("trained_llama_onnx"))


@pytest.fixture(scope="session")
def held_out_ids() -> np.ndarray:
    """8 held-out sequences of SEQ tokens, flattened (perplexity windows of SEQ align with them)."""
    return arithmetic_sequences(8, SEQ, seed=7).reshape(-1)


def calibration_feeds(num_layers: int, kv_heads: int, head_dim: int, batches: int = 4):
    """Prefill feeds (empty past) over training-like sequences, for static int8 calibration."""
    for index in range(batches):
        ids = arithmetic_sequences(4, SEQ, seed=500 + index)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                "position_ids": np.tile(np.arange(SEQ, dtype=np.int64), (ids.shape[0], 1))}
        for layer in range(num_layers):
            for kind in ("key", "value"):
                feed[f"past_key_values.{layer}.{kind}"] = np.zeros((ids.shape[0], kv_heads, 0, head_dim),
                                                                   dtype=np.float32)
        yield feed
