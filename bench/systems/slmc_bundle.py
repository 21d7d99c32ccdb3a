"""slmc's own bundle through its runtime (onnxruntime only): load_bundle + Generation.

Uses the runtime's public pieces (the same ones `slmc.runtime.bench.bench` uses)
so the harness can feed every system the same prompt ids. session_fraction is the
share of decode time spent inside InferenceSession.run; the rest is the Python loop.
"""

from __future__ import annotations

import time

from bench.systems.common import FIRST_TOKENS, check_length, measure_loop, peak_rss_mb, run_record


def measure(spec: dict) -> dict:
    from slmc.runtime.bundle import load_bundle
    from slmc.runtime.stepper import resolve_loop

    start = time.perf_counter()
    bundle = load_bundle(spec["artifact"], threads=spec["threads"], loop=spec.get("loop", "auto"))
    threading = bundle.threading.as_dict()  # threads None: slmc's own choice for this machine and load
    load_s = time.perf_counter() - start
    prompts = spec["prompts"]
    first_tokens: list[int] = []

    def one_run(new: int) -> dict:
        params = bundle.params(max_new_tokens=new, do_sample=False, ignore_eos=True)
        generation = bundle.start(prompts, params)
        for _ in generation:
            pass
        check_length("slmc", generation.steps, new)
        first_tokens[:] = generation.completions[0].token_ids[:FIRST_TOKENS]
        fraction = generation.decode_run_seconds / generation.decode_seconds if generation.decode_seconds else 0.0
        return run_record(generation.prefill_seconds, generation.decode_seconds, len(prompts), new,
                          session_fraction=round(fraction, 4))

    runs, warm_s = measure_loop(one_run, spec)
    return {"runs": runs, "load_seconds": round(load_s, 3), "warmup_seconds": warm_s,
            "peak_rss_mb": peak_rss_mb(),
            "info": {"provider": bundle.session.get_providers()[0],
                     "loop": resolve_loop(bundle.session, bundle.loop),
                     "precision": bundle.manifest.data.get("precision"), "first_tokens": first_tokens,
                     "threading": threading}}
