"""Optimum: `optimum-cli export onnx --task text-generation-with-past` + ORTModelForCausalLM.generate.

Runs inside its own virtual environment (bench/.work/optimum-venv: optimum-onnx
pins transformers < 4.58), started by the harness through bench/worker.py.
Timing as for torch_eager: a streamer marks the first and last new token.
"""

from __future__ import annotations

import time

from bench.systems.common import FIRST_TOKENS, check_length, measure_loop, peak_rss_mb, run_record
from bench.systems.torch_eager import _Clock


def _session_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def measure(spec: dict) -> dict:
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    torch.set_num_threads(spec["threads"])
    start = time.perf_counter()
    model = ORTModelForCausalLM.from_pretrained(spec["artifact"], use_cache=True, provider="CPUExecutionProvider",
                                                session_options=_session_options(spec["threads"]))
    load_s = time.perf_counter() - start
    ids = torch.tensor(spec["prompts"], dtype=torch.long)
    mask = torch.ones_like(ids)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0

    first_tokens: list[int] = []

    def one_run(new: int) -> dict:
        clock = _Clock()
        begin = time.perf_counter()
        out = model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, use_cache=True, streamer=clock, pad_token_id=pad)
        end = time.perf_counter()
        check_length("optimum", out.shape[1] - ids.shape[1], new)
        first_tokens[:] = out[0, ids.shape[1]:ids.shape[1] + FIRST_TOKENS].tolist()
        first = clock.calls[1]
        return run_record(first - begin, end - first, ids.shape[0], new)

    runs, warm_s = measure_loop(one_run, spec)
    from importlib.metadata import version

    return {"runs": runs, "load_seconds": round(load_s, 3), "warmup_seconds": warm_s,
            "peak_rss_mb": peak_rss_mb(),
            "info": {"first_tokens": first_tokens, "optimum": version("optimum"),
                     "optimum_onnx": version("optimum-onnx"),
                     "transformers": version("transformers"), "onnxruntime": ort.__version__,
                     "torch": torch.__version__}}
