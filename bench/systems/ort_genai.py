"""ONNX Runtime GenAI: its model builder's output, driven by its own generator loop.

Prefill ends when the first new token exists: append_tokens runs the prompt
through the model, the first generate_next_token picks from those logits.
Every later generate_next_token runs one decode step and picks the next token.
min_length = max_length = prompt + new tokens, so EOS cannot end a row early.
Threads: the decoder's session options are overlaid on the folder's genai_config.json
(threads None: nothing is overlaid, ORT GenAI runs at its own defaults).
spec["speculative"] (optional): GenAI's own speculative options (e.g. its n-gram proposer,
`{"ngram_size": 4, "max_draft_tokens": 8, ...}`), set with GeneratorParams.set_speculative_options;
the run records then carry GenAI's speculative statistics.
"""

from __future__ import annotations

import json
import time

import numpy as np

from bench.systems.common import FIRST_TOKENS, check_length, measure_loop, peak_rss_mb, run_record


def measure(spec: dict) -> dict:
    import onnxruntime_genai as og

    start = time.perf_counter()
    config = og.Config(spec["artifact"])
    if spec["threads"] is not None:  # None: the builder's genai_config.json as written (its defaults)
        options = {"intra_op_num_threads": spec["threads"], "inter_op_num_threads": 1}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    model = og.Model(config)
    load_s = time.perf_counter() - start
    ids = np.asarray(spec["prompts"], dtype=np.int32)
    batch, prompt_len = ids.shape

    first_tokens: list[int] = []

    def one_run(new: int) -> dict:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=prompt_len + new, min_length=prompt_len + new,
                                  do_sample=False, batch_size=batch)
        if spec.get("speculative"):
            params.set_speculative_options(**spec["speculative"])
        generator = og.Generator(model, params)
        begin = time.perf_counter()
        generator.append_tokens(ids)
        generator.generate_next_token()
        first = time.perf_counter()
        produced = 1
        while not generator.is_done():
            generator.generate_next_token()
            produced += 1
        end = time.perf_counter()
        check_length("ort-genai", produced, new)
        sequence = generator.get_sequence(0)
        check_length("ort-genai", len(sequence) - prompt_len, new)
        first_tokens[:] = [int(t) for t in sequence[prompt_len:prompt_len + FIRST_TOKENS]]
        record = run_record(first - begin, end - first, batch, new)
        if spec.get("speculative"):
            stats = generator.get_speculative_stats()
            record["speculative"] = {k: stats[k] for k in ("acceptance_rate", "draft_tokens_accepted",
                                                          "target_forward_passes") if k in stats}
            record["token_ids"] = [int(t) for t in sequence[prompt_len:]]
        return record

    runs, warm_s = measure_loop(one_run, spec)
    return {"runs": runs, "load_seconds": round(load_s, 3), "warmup_seconds": warm_s,
            "peak_rss_mb": peak_rss_mb(), "info": {"onnxruntime_genai": og.__version__, "first_tokens": first_tokens}}
