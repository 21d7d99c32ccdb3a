"""Held-out perplexity of a graph run by slmc.runtime: the one implementation the compiler's
per-stage evaluations (`slmc.export.perplexity`) and the side-by-side comparison share.

Teacher-forced over non-overlapping windows of `window` tokens, each from an empty past:
within a window token t is predicted from tokens < t, so a window of n tokens scores n - 1
predictions. Perplexity = exp(mean NLL over all of them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from slmc.runtime.errors import GenerationError
from slmc.runtime.stepper import make_stepper


def windows(token_ids: Sequence[int] | np.ndarray, window: int) -> list[np.ndarray]:
    """Non-overlapping windows as int64 rows; a tail too short to score (< 2 tokens) is dropped."""
    if window < 2:
        raise GenerationError(f"perplexity window must be at least 2 tokens, got {window}", where="window")
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    if ids.size < 2:
        raise GenerationError(f"perplexity needs at least 2 held-out tokens, got {ids.size}",
                              fix="provide a longer held-out text")
    chunks = (ids[start : start + window] for start in range(0, ids.size, window))
    return [chunk[None, :] for chunk in chunks if chunk.size >= 2]


def nll_sum(logits: np.ndarray, ids: np.ndarray) -> float:
    """Sum of -log p(token t | tokens < t) over one window, in float64."""
    scores = logits[0, :-1].astype(np.float64)
    targets = ids[0, 1:]
    peak = scores.max(axis=-1, keepdims=True)
    log_norm = peak[:, 0] + np.log(np.exp(scores - peak).sum(axis=-1))
    return float((log_norm - scores[np.arange(targets.size), targets]).sum())


def session_perplexity(session, kv, token_ids: Sequence[int] | np.ndarray, *, window: int = 128,
                       loop: str = "auto") -> float:
    """Perplexity of one decoder session (its KV layout `kv`), stepped as generation steps it."""
    nll, count = 0.0, 0
    for ids in windows(token_ids, window):
        seq = ids.shape[1]
        positions = np.arange(seq, dtype=np.int64)[None]
        logits = make_stepper(session, kv, 1, loop, capacity=seq).logits(ids, np.ones_like(ids), positions)
        nll += nll_sum(logits, ids)
        count += seq - 1
    return math.exp(nll / count)


def bundle_perplexity(bundle, token_ids: Sequence[int] | np.ndarray, *, window: int = 128) -> float:
    """Perplexity of a loaded bundle, with its own loop setting."""
    return session_perplexity(bundle.session, bundle.manifest.kv, token_ids, window=window, loop=bundle.loop)
