"""Prefill latency and decode throughput of a bundle on this machine (greedy, eos ignored).

decode_tokens_per_s counts tokens of all rows after the first token, per second of
decode time; session_fraction is the share of decode time spent inside ONNX Runtime
(the rest is the Python loop: sampling, bookkeeping). Values are medians over `runs`
after `warmup` discarded runs. peak_rss_mb is the process's peak resident memory.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from slmc.runtime.bundle import Bundle, load_bundle
from slmc.runtime.errors import GenerationError
from slmc.runtime.stepper import resolve_loop


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process in MiB (None where it cannot be read).

    Linux: VmHWM from /proc/self/status. ru_maxrss is not used there because a child
    started by fork+exec inherits its parent's value, so a small bench process run from
    a large one would report the parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def bench_prompts(bundle: Bundle, prompt_tokens: int, batch: int, seed: int = 0) -> list[list[int]]:
    """Random ordinary token ids (never a special or stop id), one row per batch entry."""
    tokens = bundle.manifest.tokens
    special = {tokens["pad_token_id"], tokens["bos_token_id"], *tokens["eos_token_ids"]}
    vocab = min(bundle.vocab_size, bundle.tokenizer.vocab_size)
    choices = np.array([i for i in range(vocab) if i not in special])
    rng = np.random.default_rng(seed)
    return [rng.choice(choices, prompt_tokens).tolist() for _ in range(batch)]


def _one_run(bundle: Bundle, prompts: list[list[int]], new_tokens: int) -> dict[str, float]:
    generation = bundle.start(prompts, bundle.params(max_new_tokens=new_tokens, do_sample=False, ignore_eos=True))
    for _ in generation:
        pass
    decoded = len(prompts) * (generation.steps - 1)
    seconds = generation.decode_seconds
    return {
        "prefill_ms": round(generation.prefill_seconds * 1e3, 3),
        "decode_tokens_per_s": round(decoded / seconds, 1) if seconds > 0 else 0.0,
        "decode_ms_per_token": round(seconds * 1e3 / max(generation.steps - 1, 1), 4),
        "session_fraction": round(generation.decode_run_seconds / seconds, 3) if seconds > 0 else 0.0,
        "tokens": generation.steps,
    }


def bench(bundle: Bundle | str | Path, prompt_tokens: int = 128, new_tokens: int = 128, runs: int = 5,
          batch: int = 1, warmup: int = 1, *, loop: str | None = None, threads: int | None = None,
          allow_foreign: bool = False, spinning: bool | None = None) -> dict[str, Any]:
    """Benchmark a bundle (a path is verified and loaded first); medians after warm-up."""
    for name, value, low in (("prompt_tokens", prompt_tokens, 1), ("new_tokens", new_tokens, 2),
                             ("runs", runs, 1), ("batch", batch, 1), ("warmup", warmup, 0)):
        if not isinstance(value, int) or value < low:
            raise GenerationError(f"{name} must be an integer >= {low}, got {value!r}", where="bench")
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle, allow_foreign=allow_foreign, threads=threads, loop=loop or "auto",
                             spinning=spinning)
    elif loop:
        bundle.loop = loop
    if prompt_tokens + new_tokens > bundle.context:
        raise GenerationError(f"prompt_tokens + new_tokens = {prompt_tokens + new_tokens} exceeds the bundle's "
                              f"context of {bundle.context} tokens", where="bench",
                              fix="lower --prompt-tokens or --new-tokens")
    prompts = bench_prompts(bundle, prompt_tokens, batch)
    for _ in range(warmup):
        _one_run(bundle, prompts, new_tokens)
    detail = [_one_run(bundle, prompts, new_tokens) for _ in range(runs)]
    result: dict[str, Any] = {
        "bundle": bundle.manifest.name,
        "provider": bundle.session.get_providers()[0],
        "onnxruntime": ort.__version__,
        "loop": resolve_loop(bundle.session, bundle.loop),
        "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "batch": batch,
        "runs": runs, "warmup": warmup,
        "threads": bundle.threading.threads, "spinning": bundle.threading.spinning,
        "threading_reason": bundle.threading.reason,
    }
    for key in ("prefill_ms", "decode_tokens_per_s", "decode_ms_per_token", "session_fraction"):
        result[key] = round(statistics.median(run[key] for run in detail), 4)
    result["peak_rss_mb"] = peak_rss_mb()
    result["runs_detail"] = detail
    return result
