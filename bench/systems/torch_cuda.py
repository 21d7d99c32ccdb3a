"""PyTorch CUDA eager `model.generate` (fp16, KV cache) for bench/gpu_check.py.

Timing as torch_eager (a streamer marks each new token), with torch.cuda.synchronize() in the
streamer so each mark is when the token really exists, not when its kernels were queued.
"""

from __future__ import annotations

import time

from bench.systems.common import FIRST_TOKENS, check_length, measure_loop, peak_rss_mb, run_record


class _SyncClock:
    """A streamer that records when each new token exists on the GPU."""

    def __init__(self, torch):
        self.torch, self.calls = torch, []

    def put(self, value) -> None:
        self.torch.cuda.synchronize()
        self.calls.append(time.perf_counter())

    def end(self) -> None:
        pass


def measure(spec: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    if not torch.cuda.is_available():
        raise RuntimeError("torch sees no CUDA device")
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(spec["artifact"], dtype=torch.float16).to("cuda").eval()
    load_s = time.perf_counter() - start
    ids = torch.tensor(spec["prompts"], dtype=torch.long, device="cuda")
    mask = torch.ones_like(ids)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    first_tokens: list[int] = []

    def one_run(new: int) -> dict:
        clock = _SyncClock(torch)
        torch.cuda.synchronize()
        begin = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                 do_sample=False, use_cache=True, streamer=clock, pad_token_id=pad)
        torch.cuda.synchronize()
        end = time.perf_counter()
        check_length("torch-cuda", out.shape[1] - ids.shape[1], new)
        first_tokens[:] = out[0, ids.shape[1]:ids.shape[1] + FIRST_TOKENS].tolist()
        return run_record(clock.calls[1] - begin, end - clock.calls[1], ids.shape[0], new)

    runs, warm_s = measure_loop(one_run, spec)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"runs": runs, "load_seconds": round(load_s, 3), "warmup_seconds": warm_s,
            "peak_rss_mb": peak_rss_mb(),
            "info": {"first_tokens": first_tokens, "torch": torch.__version__, "device": torch.cuda.get_device_name(),
                     "weight_bytes": int(weights), "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}}
