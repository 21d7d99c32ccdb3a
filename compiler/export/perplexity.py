"""Held-out perplexity, the metric measured after every stage that changes weights.

Teacher-forced over non-overlapping windows of `window` tokens, each from an
empty past: within a window token t is predicted from tokens < t, so a window of
n tokens scores n - 1 predictions. Perplexity = exp(mean NLL over all of them).
The ONNX version runs each window through slmc.runtime's stepper for the graph (the
shared-KV-buffer loop on graphs fused for it, as on a device); the PyTorch version cuts
the windows identically, so their numbers compare directly (fp32 agrees to ~1e-6 relative).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from slmc.errors import StageError
from slmc.export.onnx_export import load_checkpoint
from slmc.runtime.stepper import Decoder


def _windows(token_ids: Sequence[int] | np.ndarray, window: int) -> list[np.ndarray]:
    """Non-overlapping windows as int64 rows; a tail too short to score (< 2 tokens) is dropped."""
    if window < 2:
        raise StageError(f"perplexity window must be at least 2 tokens, got {window}", where="window")
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    if ids.size < 2:
        raise StageError(
            f"perplexity needs at least 2 held-out tokens, got {ids.size}",
            fix="provide a longer held-out text",
        )
    chunks = (ids[start : start + window] for start in range(0, ids.size, window))
    return [chunk[None, :] for chunk in chunks if chunk.size >= 2]


def _nll_sum(logits: np.ndarray, ids: np.ndarray) -> float:
    """Sum of -log p(token t | tokens < t) over one window, in float64."""
    scores = logits[0, :-1].astype(np.float64)
    targets = ids[0, 1:]
    peak = scores.max(axis=-1, keepdims=True)
    log_norm = peak[:, 0] + np.log(np.exp(scores - peak).sum(axis=-1))
    return float((log_norm - scores[np.arange(targets.size), targets]).sum())


def _perplexity(nll: float, count: int) -> float:
    return math.exp(nll / count)


def onnx_perplexity(
    onnx_path: Path,
    token_ids: Sequence[int] | np.ndarray,
    *,
    window: int = 128,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> float:
    """Perplexity of a decoder graph (fp32 or fp16 KV) run by slmc.runtime."""
    windows = _windows(token_ids, window)
    decoder = Decoder.open(Path(onnx_path), providers=providers)
    nll, count = 0.0, 0
    for ids in windows:
        seq = ids.shape[1]
        positions = np.arange(seq, dtype=np.int64)[None]
        logits = decoder.stepper(1, capacity=seq).logits(ids, np.ones_like(ids), positions)
        nll += _nll_sum(logits, ids)
        count += seq - 1
    return _perplexity(nll, count)


def torch_perplexity(
    checkpoint_dir: Path | torch.nn.Module,
    token_ids: Sequence[int] | np.ndarray,
    window: int = 128,
) -> float:
    """The same perplexity computed by the PyTorch model (a checkpoint folder or a loaded model)."""
    windows = _windows(token_ids, window)
    if isinstance(checkpoint_dir, torch.nn.Module):
        model = checkpoint_dir.eval()
    else:
        model = load_checkpoint(Path(checkpoint_dir))
    nll, count = 0.0, 0
    with torch.no_grad():
        for ids in windows:
            logits = model(input_ids=torch.from_numpy(ids), use_cache=False).logits
            nll += _nll_sum(logits.float().numpy(), ids)
            count += ids.shape[1] - 1
    return _perplexity(nll, count)
