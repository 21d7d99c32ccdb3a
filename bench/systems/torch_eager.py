"""PyTorch eager `model.generate` with the KV cache, on the checkpoint slmc trained.

Timing: a streamer's `put` is called with the prompt, then once per new token
right after it is chosen, so the first new-token call marks the end of prefill.
min_new_tokens = max_new_tokens keeps EOS from ending a row early.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from bench.systems.common import FIRST_TOKENS, check_length, measure_loop, peak_rss_mb, run_record


class _Clock:
    """A transformers streamer that only records when each new token arrives."""

    def __init__(self):
        self.calls: list[float] = []

    def put(self, value) -> None:
        self.calls.append(time.perf_counter())

    def end(self) -> None:
        pass


def generate_runner(model, prompts: list[list[int]], system: str, first_tokens: list[int],
                    context: Callable[[], Any] = contextlib.nullcontext) -> Callable[[int], dict]:
    """one_run(new) for a transformers-style `model.generate` (PyTorch here, Optimum's ORT model
    too): greedy, exactly `new` tokens per row, timed by the streamer; keeps row 0's first tokens."""
    import torch

    ids = torch.tensor(prompts, dtype=torch.long)
    mask = torch.ones_like(ids)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0

    def one_run(new: int) -> dict:
        clock = _Clock()
        begin = time.perf_counter()
        with context():
            out = model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                 do_sample=False, use_cache=True, streamer=clock, pad_token_id=pad)
        end = time.perf_counter()
        check_length(system, out.shape[1] - ids.shape[1], new)
        first_tokens[:] = out[0, ids.shape[1]:ids.shape[1] + FIRST_TOKENS].tolist()
        first = clock.calls[1]  # calls[0] is the prompt itself
        return run_record(first - begin, end - first, ids.shape[0], new)

    return one_run


def measure(spec: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    if spec["threads"] is not None:  # None: PyTorch's default pool
        torch.set_num_threads(spec["threads"])
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(spec["artifact"], dtype=torch.float32).eval()
    load_s = time.perf_counter() - start
    first_tokens: list[int] = []
    one_run = generate_runner(model, spec["prompts"], "torch", first_tokens, torch.inference_mode)
    runs, warm_s = measure_loop(one_run, spec)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"runs": runs, "load_seconds": round(load_s, 3), "warmup_seconds": warm_s,
            "peak_rss_mb": peak_rss_mb(),
            "info": {"first_tokens": first_tokens, "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "weight_bytes": int(weights)}}
