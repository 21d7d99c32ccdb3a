"""Prompt-lookup speculative decoding against plain greedy decoding, on a model trained here.

    .venv/bin/python bench/speculative.py                          # compile (once, cached) + measure, ~10 min
    .venv/bin/python bench/speculative.py --bundle generated/<run> # an existing run folder or bundle
    .venv/bin/python bench/speculative.py --out bench/.work/speculative/results --runs 3

The target is `slmc compile` with the defaults (`model=tiny`, trained 200 steps on the builtin
data: Python standard-library sources) unless --bundle names another. Each prompt is decoded
by `slmc.runtime.bench.bench(..., speculative="lookup")`: plain and speculative runs of the
same prompt alternate in one process on one session (same bundle, same loop, same threads),
so load on this shared machine hits both alike; the speedup is median over median decode
tokens/s. Prompts:
- rewrite: a function in the prompt, asked to be rewritten (input-grounded: the output copies it);
- continue: the start of a module, continued freely (little to copy: lookup's worst case).
Greedy identity is checked on every prompt (token ids of plain and speculative decoding, EOS
ignored). With --genai, ORT GenAI's model builder converts the run's checkpoint at the bundle's
precision and its own generator loop decodes the same prompt ids (greedy, exactly new-tokens
tokens) in the same process, so the lookup rate can be put beside GenAI's plain decode and beside
GenAI's own n-gram speculative decoding (GENAI_NGRAM: the options its documentation suggests for
input-grounded text), the peer prompt lookup must beat.
--mode draft measures the bundle's draft decoder instead (`python -m slmc.draft` attaches one;
the JSON keeps the `lookup_*` key names for its rates). Writes
bench/results/speculative-<date>.{json,md} (speculative-draft-<date> for --mode draft; or --out).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import machine  # noqa: E402  (stdlib only)

WORK = ROOT / "bench" / ".work" / "speculative"
FUNCTION = '''def count_words(path):
    counts = {}
    with open(path) as f:
        for line in f:
            for word in line.split():
                counts[word] = counts.get(word, 0) + 1
    return counts
'''
PROMPTS = {
    "rewrite": f"# Rewrite this function with a docstring.\n{FUNCTION}\n\n# Rewritten:\ndef count_words(path):\n",
    "continue": "import os\nimport sys\n\n\nclass Config:\n    def __init__(self, ",
}


def compile_target(overrides: list[str]) -> Path:
    """The run folder of `slmc compile` with these overrides (the stage cache makes reruns cheap)."""
    slmc = Path(sys.executable).parent / "slmc"
    cmd = [str(slmc), "compile", *overrides, f"out_dir={WORK / 'generated'}"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "400"})
    found = [line.split("run folder:", 1)[1].strip() for line in done.stdout.splitlines() if "run folder:" in line]
    if done.returncode != 0 or not found:
        raise SystemExit(f"slmc compile failed ({' '.join(cmd)}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return Path(found[-1])


def identical(bundle, prompt: str, new_tokens: int, args) -> dict:
    """Greedy token ids of plain and speculative decoding (EOS ignored), and whether they agree."""
    ids = [bundle.encode(prompt)]
    out = {}
    for mode in ("off", args.mode):
        generation = bundle.start(ids, bundle.params(max_new_tokens=new_tokens, do_sample=False, ignore_eos=True),
                                  speculative=mode)
        for _ in generation:
            pass
        out[mode] = generation.completions[0].token_ids
    return {"identical": out["off"] == out[args.mode], "tokens": len(out["off"]),
            "text": bundle.tokenizer.decode(out["off"])}


# ORT GenAI's n-gram proposer as its docs/SpeculativeDecoding.md suggests for code and input-grounded text:
# match the last 3 tokens, chained lookup, adaptive width from 2.
GENAI_NGRAM = {"ngram_size": 4, "max_draft_tokens": 8, "ngram_chained_lookup": True, "min_adaptive_k": 2}


def genai_rates(model: Path, ids: list[int], threads: int, args) -> dict:
    """ORT GenAI's median greedy decode tokens/s on these prompt ids, plain and with its n-gram
    speculative decoding (bench/systems/ort_genai.py), and its n-gram acceptance rate."""
    import statistics

    from bench.systems import ort_genai

    spec = {"artifact": str(model), "threads": threads, "prompts": [ids], "warmup": 1, "runs": args.runs,
            "new_tokens": args.new_tokens}
    plain = ort_genai.measure(spec)["runs"]
    ngram = ort_genai.measure({**spec, "speculative": GENAI_NGRAM})["runs"]
    rate = lambda runs: round(statistics.median(run["decode_tokens_per_s"] for run in runs), 1)  # noqa: E731
    return {"genai_decode_tokens_per_s": rate(plain), "genai_ngram_decode_tokens_per_s": rate(ngram),
            "genai_ngram_acceptance_rate": ngram[-1]["speculative"].get("acceptance_rate")}


def measure(bundle_path: Path, args, genai: Path | None) -> list[dict]:
    from slmc.runtime.bench import bench
    from slmc.runtime.bundle import load_bundle

    rows = []
    for threads in args.threads:
        bundle = load_bundle(bundle_path, threads=threads)
        for name, prompt in PROMPTS.items():
            extra = {}
            if genai is not None:
                extra.update(genai_rates(genai, bundle.encode(prompt), threads, args))
            result = bench(bundle, new_tokens=args.new_tokens, runs=args.runs, warmup=1, speculative=args.mode,
                           prompt=prompt)
            spec = result.pop("speculative")
            spec.pop("runs_detail")
            rows.append({"prompt": name, "threads": threads, "loop": result["loop"],
                         "prompt_tokens": result["prompt_tokens"], "new_tokens": args.new_tokens,
                         "plain_decode_tokens_per_s": spec["plain_decode_tokens_per_s"],
                         "lookup_decode_tokens_per_s": spec["decode_tokens_per_s"], "speedup": spec["speedup"],
                         "acceptance_rate": spec["acceptance_rate"],
                         "tokens_per_target_call": spec["tokens_per_target_call"],
                         **extra, **identical(bundle, prompt, args.new_tokens, args)})
            if genai is not None:
                rows[-1]["lookup_over_genai"] = round(rows[-1]["lookup_decode_tokens_per_s"]
                                                      / rows[-1]["genai_decode_tokens_per_s"], 3)
                rows[-1]["lookup_over_genai_ngram"] = round(rows[-1]["lookup_decode_tokens_per_s"]
                                                            / rows[-1]["genai_ngram_decode_tokens_per_s"], 3)
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "text"}), flush=True)
    return rows


def markdown(record: dict) -> str:
    mode = record.get("mode", "lookup")
    lines = [f"# Speculative decoding ({mode}) against plain greedy decoding, {record['date']}", "",
             f"Command: `{record['command']}`", "",
             f"Bundle: `{record['bundle']}` ({record['precision']}, {record['parameters']} parameters), "
             f"onnxruntime {record['onnxruntime']}, machine load average at start {record['loadavg']}.", "",
             *([record["note"], ""] if record.get("note") else []),
             f"Plain and {mode} runs alternate on one session in one process; decode tok/s are medians over "
             f"{record['runs']} runs each; speedup = {mode} / plain.", "",
             f"| prompt | threads | loop | prompt tok | new tok | plain tok/s | {mode} tok/s | speedup | acceptance "
             "| tokens / target call | greedy identical |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in record["rows"]:
        lines.append(f"| {r['prompt']} | {r['threads']} | {r['loop']} | {r['prompt_tokens']} | {r['new_tokens']} "
                     f"| {r['plain_decode_tokens_per_s']} | {r['lookup_decode_tokens_per_s']} | {r['speedup']}x "
                     f"| {r['acceptance_rate']:.1%} | {r['tokens_per_target_call']} | {r['identical']} |")
    if any("genai_decode_tokens_per_s" in r for r in record["rows"]):
        lines += ["", f"ORT GenAI {record.get('genai_version')} (model builder on the same checkpoint, same "
                  "precision, its own greedy loop, same prompt ids and threads):", "",
                  f"GenAI n-gram = its own speculative decoding with {GENAI_NGRAM}.", "",
                  "| prompt | threads | GenAI plain tok/s | GenAI n-gram tok/s | GenAI n-gram acceptance "
                  "| slmc lookup tok/s | lookup / GenAI plain | lookup / GenAI n-gram |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['prompt']} | {r['threads']} | {r['genai_decode_tokens_per_s']} "
                  f"| {r.get('genai_ngram_decode_tokens_per_s', '-')} | {_pct(r.get('genai_ngram_acceptance_rate'))} "
                  f"| {r['lookup_decode_tokens_per_s']} | {r['lookup_over_genai']}x "
                  f"| {r.get('lookup_over_genai_ngram', '-')}x |" for r in record["rows"]]
    lines += ["", "Greedy outputs (the same for both modes where identical):", ""]
    for r in record["rows"]:
        if r["threads"] == record["rows"][0]["threads"]:
            lines += [f"- {r['prompt']}:", "", "```python", r["text"], "```", ""]
    return "\n".join(lines) + "\n"


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, help="a run folder or bundle (default: compile --overrides)")
    parser.add_argument("--overrides", nargs="*", default=["model=tiny"], help="slmc compile overrides")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--mode", choices=("lookup", "draft"), default="lookup",
                        help="draft: the bundle's draft decoder (python -m slmc.draft attaches one)")
    parser.add_argument("--note", default="", help="a sentence for the results file (e.g. what the model is)")
    parser.add_argument("--genai", action="store_true", help="also ORT GenAI's plain and n-gram decode (needs the run folder's "
                                                             "checkpoint/)")
    args = parser.parse_args(argv)
    bundle_path = args.bundle or compile_target(args.overrides)
    from slmc.runtime.bundle import load_bundle

    manifest = load_bundle(bundle_path).manifest
    genai = None
    if args.genai:
        from bench.prepare import genai_model

        run_folder = manifest.folder.parent
        genai = genai_model(run_folder / "checkpoint", manifest.data["precision"], WORK / f"genai-{run_folder.name}",
                            WORK)
    started = dt.datetime.now(dt.timezone.utc)
    loadavg = machine.loadavg()
    rows = measure(bundle_path, args, genai)
    import onnxruntime as ort

    record = {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "command": shlex.join(["python", *sys.argv]),
              "bundle": str(bundle_path), "precision": manifest.data["precision"],
              "parameters": manifest.data["model"].get("parameters"), "onnxruntime": ort.__version__,
              "runs": args.runs, "loadavg": loadavg, "machine": machine.describe(), "rows": rows, "note": args.note,
              "mode": args.mode}
    if genai is not None:
        import onnxruntime_genai as og

        record["genai_version"] = og.__version__
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"speculative-{'' if args.mode == 'lookup' else args.mode + '-'}{started:%Y-%m-%d}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(record))
    print(f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
