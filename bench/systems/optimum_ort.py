"""Optimum: `optimum-cli export onnx --task text-generation-with-past` + ORTModelForCausalLM.generate.

Runs inside its own virtual environment (bench/.work/optimum-venv: optimum-onnx
pins transformers < 4.58), started by the harness through bench/worker.py.
Timing as for torch_eager (its generate_runner): a streamer marks the first and last new token.
"""

from __future__ import annotations

import time

from bench.systems.common import measure_loop, peak_rss_mb
from bench.systems.torch_eager import generate_runner


def _session_options(threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:  # None: ORT's default pool
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def measure(spec: dict) -> dict:
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    if spec["threads"] is not None:
        torch.set_num_threads(spec["threads"])
    start = time.perf_counter()
    model = ORTModelForCausalLM.from_pretrained(spec["artifact"], use_cache=True, provider="CPUExecutionProvider",
                                                session_options=_session_options(spec["threads"]))
    load_s = time.perf_counter() - start
    first_tokens: list[int] = []
    one_run = generate_runner(model, spec["prompts"], "optimum", first_tokens)
    runs, warm_s = measure_loop(one_run, spec)
    from importlib.metadata import version

    return {"runs": runs, "load_seconds": round(load_s, 3), "warmup_seconds": warm_s,
            "peak_rss_mb": peak_rss_mb(),
            "info": {"first_tokens": first_tokens, "optimum": version("optimum"),
                     "optimum_onnx": version("optimum-onnx"),
                     "transformers": version("transformers"), "onnxruntime": ort.__version__,
                     "torch": torch.__version__}}
