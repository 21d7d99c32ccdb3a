"""PyTorch eager `model.generate` with the KV cache, on the checkpoint slmc trained.

Timing: a streamer's `put` is called with the prompt, then once per new token
right after it is chosen, so the first new-token call marks the end of prefill.
min_new_tokens = max_new_tokens keeps EOS from ending a row early.
"""

from __future__ import annotations

import time

from bench.systems.common import FIRST_TOKENS, check_length, measure_loop, peak_rss_mb, run_record


class _Clock:
    """A transformers streamer that only records when each new token arrives."""

    def __init__(self):
        self.calls: list[float] = []

    def put(self, value) -> None:
        self.calls.append(time.perf_counter())

    def end(self) -> None:
        pass


def measure(spec: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(spec["threads"])
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(spec["artifact"], dtype=torch.float32).eval()
    load_s = time.perf_counter() - start
    ids = torch.tensor(spec["prompts"], dtype=torch.long)
    mask = torch.ones_like(ids)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0

    first_tokens: list[int] = []

    def one_run(new: int) -> dict:
        clock = _Clock()
        begin = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                 do_sample=False, use_cache=True, streamer=clock, pad_token_id=pad)
        end = time.perf_counter()
        check_length("torch", out.shape[1] - ids.shape[1], new)
        first_tokens[:] = out[0, ids.shape[1]:ids.shape[1] + FIRST_TOKENS].tolist()
        first = clock.calls[1]  # calls[0] is the prompt itself
        return run_record(first - begin, end - first, ids.shape[0], new)

    runs, warm_s = measure_loop(one_run, spec)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"runs": runs, "load_seconds": round(load_s, 3), "warmup_seconds": warm_s,
            "peak_rss_mb": peak_rss_mb(),
            "info": {"first_tokens": first_tokens, "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "weight_bytes": int(weights)}}
