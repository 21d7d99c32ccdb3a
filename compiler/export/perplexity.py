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
from slmc.runtime.perplexity import nll_sum as _nll_sum
from slmc.runtime.perplexity import session_perplexity
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


def _perplexity(nll: float, count: int) -> float:
    return math.exp(nll / count)


def onnx_perplexity(
    onnx_path: Path,
    token_ids: Sequence[int] | np.ndarray,
    *,
    window: int = 128,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> float:
    """Perplexity of a decoder graph (fp32 or fp16 KV) run by slmc.runtime (its perplexity harness)."""
    _windows(token_ids, window)  # too few tokens or a bad window: a StageError naming it
    decoder = Decoder.open(Path(onnx_path), providers=providers)
    return session_perplexity(decoder.session, decoder.kv, token_ids, window=window)


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
