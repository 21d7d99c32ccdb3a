"""Held-out perplexity: ONNX Runtime and PyTorch agree, fp16 graphs work, the formula holds."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch

from slmc.errors import StageError
from slmc.export.io_spec import read_io
from slmc.export.onnx_export import load_checkpoint
from slmc.export.perplexity import onnx_perplexity, torch_perplexity

TOKENS = np.random.default_rng(7).integers(0, 384, 300)  # 2 full windows of 128 + a tail of 44


def test_onnx_and_torch_perplexity_agree(tiny_llama_dir, tiny_llama_export):
    ours = onnx_perplexity(tiny_llama_export.onnx_path, TOKENS, window=128)
    reference = torch_perplexity(tiny_llama_dir, TOKENS, window=128)
    assert math.isfinite(ours) and ours > 1.0
    assert abs(ours - reference) / reference < 1e-3


def test_perplexity_is_exp_of_mean_cross_entropy_over_windows(tiny_llama_dir):
    model = load_checkpoint(tiny_llama_dir)
    losses, count = [], 0
    with torch.no_grad():
        for start in range(0, TOKENS.size, 100):
            ids = torch.from_numpy(TOKENS[start : start + 100])[None]
            logits = model(ids).logits[0, :-1]
            losses.append(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item())
            count += ids.shape[1] - 1
    expected = math.exp(sum(losses) / count)
    assert torch_perplexity(model, TOKENS, window=100) == pytest.approx(expected, rel=1e-6)


def test_fp16_graph_reads_its_past_dtype(tiny_llama_export, tmp_path):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    fp16 = convert_float_to_float16(onnx.load(str(tiny_llama_export.onnx_path)), keep_io_types=False)
    path = tmp_path / "model_fp16.onnx"
    onnx.save(fp16, str(path))
    assert read_io(path)["inputs"][3]["dtype"] == "float16"
    half = onnx_perplexity(path, TOKENS, window=128)
    full = onnx_perplexity(tiny_llama_export.onnx_path, TOKENS, window=128)
    assert abs(half - full) / full < 2e-2


@pytest.mark.parametrize("tokens,window", [([5], 128), ([5, 6, 7], 1)])
def test_too_little_to_score_is_an_error(tiny_llama_export, tokens, window):
    with pytest.raises(StageError):
        onnx_perplexity(tiny_llama_export.onnx_path, tokens, window=window)
