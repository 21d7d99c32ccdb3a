"""Prefill latency and decode throughput of a bundle on this machine (greedy, eos ignored).

decode_tokens_per_s counts tokens of all rows after the first token, per second of
decode time; session_fraction is the share of decode time spent inside ONNX Runtime
(the rest is the Python loop: sampling, bookkeeping). Values are medians over `runs`
after `warmup` discarded runs. peak_rss_mb is the process's peak resident memory.

With speculative decoding ("lookup"), each timed run decodes the same prompt plainly and
speculatively, back to back in this process on the same session, and `speculative` reports
the acceptance rate (kept drafts / drafted tokens), tokens per target call (decode tokens /
decode calls) and the speedup (median speculative decode tokens/s over median plain).
Random prompts give lookup nothing to copy: pass a prompt text the output draws on.
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
from slmc.runtime.speculative import SpeculativeGeneration, resolve_speculative
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


def _one_run(bundle: Bundle, prompts: list[list[int]], new_tokens: int, speculative: str = "off") -> dict[str, float]:
    params = bundle.params(max_new_tokens=new_tokens, do_sample=False, ignore_eos=True)
    generation = bundle.start(prompts, params, speculative=speculative)
    for _ in generation:
        pass
    decoded = len(prompts) * (generation.steps - 1)
    seconds = generation.decode_seconds
    run = {
        "prefill_ms": round(generation.prefill_seconds * 1e3, 3),
        "decode_tokens_per_s": round(decoded / seconds, 1) if seconds > 0 else 0.0,
        "decode_ms_per_token": round(seconds * 1e3 / max(generation.steps - 1, 1), 4),
        "session_fraction": round(generation.decode_run_seconds / seconds, 3) if seconds > 0 else 0.0,
        "tokens": generation.steps,
    }
    if isinstance(generation, SpeculativeGeneration):
        run.update(target_calls=generation.target_calls, drafted=generation.drafted, accepted=generation.accepted)
    return run


def _speculative_summary(mode: str, plain: list[dict], fast: list[dict]) -> dict[str, Any]:
    """Acceptance, tokens per target call and speedup over the timed runs (see the module doc)."""
    drafted, accepted = sum(r["drafted"] for r in fast), sum(r["accepted"] for r in fast)
    calls = sum(r["target_calls"] for r in fast)
    plain_rate = round(statistics.median(r["decode_tokens_per_s"] for r in plain), 1)
    fast_rate = round(statistics.median(r["decode_tokens_per_s"] for r in fast), 1)
    return {
        "mode": mode,
        "acceptance_rate": round(accepted / drafted, 4) if drafted else 0.0,
        "tokens_per_target_call": round(sum(r["tokens"] - 1 for r in fast) / calls, 3) if calls else 1.0,
        "plain_decode_tokens_per_s": plain_rate,
        "decode_tokens_per_s": fast_rate,
        "speedup": round(fast_rate / plain_rate, 3) if plain_rate else 0.0,
        "runs_detail": fast,
    }


def bench(bundle: Bundle | str | Path, prompt_tokens: int = 128, new_tokens: int = 128, runs: int = 5,
          batch: int = 1, warmup: int = 1, *, loop: str | None = None, threads: int | None = None,
          allow_foreign: bool = False, speculative: str = "off", prompt: str | None = None,
          spinning: bool | None = None) -> dict[str, Any]:
    """Benchmark a bundle (a path is verified and loaded first); medians after warm-up.

    speculative: "off", or a mode to compare with plain decoding (batch 1; "auto" is
    resolved as for greedy decoding). prompt: text to encode instead of random ids
    (prompt_tokens is then its length). spinning: None lets slmc.runtime.threads choose.
    """
    for name, value, low in (("prompt_tokens", prompt_tokens, 1), ("new_tokens", new_tokens, 2),
                             ("runs", runs, 1), ("batch", batch, 1), ("warmup", warmup, 0)):
        if not isinstance(value, int) or value < low:
            raise GenerationError(f"{name} must be an integer >= {low}, got {value!r}", where="bench")
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle, allow_foreign=allow_foreign, threads=threads, loop=loop or "auto",
                             spinning=spinning)
    elif loop:
        bundle.loop = loop
    greedy = bundle.params(do_sample=False)
    mode = resolve_speculative(speculative, greedy, batch, has_draft=bundle.draft is not None)
    if prompt is not None:
        prompts = [bundle.encode(prompt)] * batch
        prompt_tokens = len(prompts[0])
    if prompt_tokens + new_tokens > bundle.context:
        raise GenerationError(f"prompt_tokens + new_tokens = {prompt_tokens + new_tokens} exceeds the bundle's "
                              f"context of {bundle.context} tokens", where="bench",
                              fix="lower --prompt-tokens or --new-tokens, or pass a shorter prompt")
    if prompt is None:
        prompts = bench_prompts(bundle, prompt_tokens, batch)
    for _ in range(warmup):
        _one_run(bundle, prompts, new_tokens)
        if mode != "off":
            _one_run(bundle, prompts, new_tokens, mode)
    detail, fast = [], []
    for _ in range(runs):  # interleaved: a load change on a shared machine hits both alike
        detail.append(_one_run(bundle, prompts, new_tokens))
        if mode != "off":
            fast.append(_one_run(bundle, prompts, new_tokens, mode))
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
    if mode != "off":
        result["speculative"] = _speculative_summary(mode, detail, fast)
    return result
