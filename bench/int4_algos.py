"""int4 accuracy per weight-only algorithm (compress.int4_algo) on a model trained here.

    .venv/bin/python bench/int4_algos.py                          # model=tiny, 300 steps
    .venv/bin/python bench/int4_algos.py --model small --steps 200 --algos rtn,gptq

One fp32 `slmc compile` trains the model (its out_dir keeps the stage cache, so a second run of
the bench reuses the training); then one int4 compile per algorithm, each reusing data,
tokenizer, training, export and fusion from that cache and running only compress and package.
Every int4 compile uses compress.block_size=auto (the device's block candidates, smallest first as
the reference) with the perplexity gate off (compress.max_ppl_increase=null), so every algorithm
gets a row and the perplexity at each block size it tried.

Per row: held-out perplexity of the shipped bundle (the compile's own measurement: the first
8192 held-out tokens, slmc.runtime on onnxruntime) and its change against the fp32 bundle, the
block kept by auto and the perplexity at each block tried, model.onnx size, compress-stage
seconds, and decode tokens/s (slmc.runtime.bench: greedy, 64-token prompt, 64 new tokens, median
of --decode-runs; rough on a shared machine, the load average is recorded), and task accuracy of
the bundle (the compile's own eval.tasks measurement: with data=builtin the shipped
standard-library completion task, docs/tasks.md, through slmc.runtime as the device runs it).

Writes bench/results/int4-algos-<date>.json and .md; run folders under bench/.work/int4_algos/.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import machine  # noqa: E402

WORK = ROOT / "bench" / ".work" / "int4_algos"
ALGOS = ("rtn", "hqq", "gptq", "kquant")


def compile_quietly(overrides: list[str], log: Path):
    """slmc's compile in this process, its console output in `log`; the typed result and wall seconds."""
    from slmc.load import load_config
    from slmc.pipeline import compile_config

    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        print("$ slmc compile " + " ".join(shlex.quote(o) for o in overrides))
        result = compile_config(load_config(overrides))
    return result, round(time.perf_counter() - start, 1)


def decode_speed(bundle: Path, runs: int) -> float:
    from slmc.runtime.bench import bench

    return bench(bundle, prompt_tokens=64, new_tokens=64, runs=runs, warmup=1)["decode_tokens_per_s"]


def row(label: str, result, seconds: float, runs: int) -> dict:
    manifest = json.loads((result.run_dir / "bundle" / "manifest.json").read_text())
    ppl = manifest["metrics"]["heldout_perplexity"]
    stage = "compress" if "compress" in ppl else next(s for s in ("optimize", "export") if s in ppl)
    compress = result.stages.get("compress")
    out = {
        "label": label,
        "run_dir": str(result.run_dir.relative_to(ROOT)) if result.run_dir.is_relative_to(ROOT) else str(result.run_dir),
        "heldout_ppl": ppl[stage],
        "checkpoint_ppl": ppl["checkpoint"],
        "model_onnx_bytes": sum(p.stat().st_size for p in (result.run_dir / "bundle").glob("model.onnx*")),
        "compile_seconds": seconds,
        "compress_seconds": manifest["metrics"]["stage_seconds"].get("compress"),
        "decode_tokens_per_s": decode_speed(result.run_dir / "bundle", runs),
    }
    tasks = manifest["metrics"].get("tasks")
    if tasks:
        out["task_accuracy"] = tasks["bundle"]["accuracy"]
        out["task_accuracy_checkpoint"] = tasks["checkpoint"]["accuracy"]
    if compress is not None:
        out["block_size"] = compress.report.get("block_size")
        out["int4_algo"] = manifest["metrics"]["compress"].get("int4_algo")
        out["trials"] = [{"block_size": t["block_size"], "heldout_ppl": t["heldout_ppl"], "kept": t["kept"]}
                         for t in compress.block_size_trials]
    return out


def markdown(meta: dict, rows: list[dict]) -> str:
    fp32 = rows[0]["heldout_ppl"]
    lines = [
        f"# int4 weight-only algorithms vs fp32 ({meta['date']})", "",
        f"Command: `{meta['command']}`", "",
        f"Machine: {meta['machine']['cpu']}, {meta['machine']['cpus_available']} CPUs available; load average "
        f"{meta['load_start']} at start, {meta['load_end']} at end; onnxruntime "
        f"{meta['machine']['packages'].get('onnxruntime')}. Total {meta['minutes']} min.", "",
        f"Model: model={meta['model']} trained here from scratch, {meta['steps']} steps (fp32 compile: "
        f"`{meta['fp32_overrides']}`). Held-out perplexity: the compile's own measurement of the shipped "
        "bundle, first 8192 tokens of data/heldout.txt. int4 rows: compress.block_size=auto over the "
        "device's candidates (device=cpu: 128, 64, 32), gate off. Decode tok/s: slmc.runtime.bench, "
        "64-token prompt, 64 new tokens, greedy, median; rough on this shared machine. Task accuracy: the "
        "bundle's, from the compile's eval.tasks (the shipped standard-library task with data=builtin).", "",
        "| bundle | held-out ppl | vs fp32 | task accuracy | block kept | ppl by block tried | model.onnx MB "
        "| decode tok/s | compress s |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        tried = ", ".join(f"{t['block_size']}: {t['heldout_ppl']:.3f}" for t in r.get("trials", [])) or "-"
        change = r["heldout_ppl"] / fp32 - 1
        accuracy = f"{r['task_accuracy']:.1%}" if r.get("task_accuracy") is not None else "-"
        lines.append(f"| {r['label']} | {r['heldout_ppl']:.3f} | {change:+.2%} | {accuracy} | {r.get('block_size') or '-'} | "
                     f"{tried} | {r['model_onnx_bytes'] / 1e6:.2f} | {r['decode_tokens_per_s']:.0f} | "
                     f"{r.get('compress_seconds') if r.get('compress_seconds') is not None else '-'} |")
    int4 = [r for r in rows[1:]]
    if int4:
        best = min(int4, key=lambda r: r["heldout_ppl"])
        best32 = min((t["heldout_ppl"], r["label"]) for r in int4 for t in r.get("trials", []))
        lines += ["", f"Best shipped int4: {best['label']}, {best['heldout_ppl'] / fp32 - 1:+.2%} vs fp32 "
                      f"(target: within 1%: {'met' if best['heldout_ppl'] <= fp32 * 1.01 else 'missed'}). "
                      f"Best at any block tried: {best32[1]}, {best32[0] / fp32 - 1:+.2%}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="model option (tiny, small)")
    parser.add_argument("--steps", type=int, default=300, help="training steps of the fp32 model")
    parser.add_argument("--algos", default=",".join(ALGOS), help="comma-separated compress.int4_algo values")
    parser.add_argument("--decode-runs", type=int, default=3, help="decode speed: median of this many runs")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every compile")
    args = parser.parse_args(argv)
    algos = [a for a in args.algos.split(",") if a]
    start, load_start = time.perf_counter(), machine.loadavg()
    out_dir = WORK / f"{args.model}-{args.steps}"
    base = [f"model={args.model}", f"train.max_steps={args.steps}", "device=cpu", f"out_dir={out_dir}", *args.extra]
    result, seconds = compile_quietly(base, out_dir / "logs" / "fp32.log")
    rows = [row("fp32", result, seconds, args.decode_runs)]
    print(f"fp32: held-out ppl {rows[0]['heldout_ppl']:.3f} ({seconds} s)", flush=True)
    for algo in algos:
        overrides = [*base, "compress=int4", f"compress.int4_algo={algo}", "compress.max_ppl_increase=null"]
        result, seconds = compile_quietly(overrides, out_dir / "logs" / f"int4-{algo}.log")
        rows.append(row(f"int4 {algo}", result, seconds, args.decode_runs))
        print(f"int4 {algo}: held-out ppl {rows[-1]['heldout_ppl']:.3f}, trials {rows[-1]['trials']} ({seconds} s)",
              flush=True)
    now = dt.datetime.now(dt.timezone.utc)
    meta = {"date": now.strftime("%Y-%m-%d %H:%M UTC"), "model": args.model, "steps": args.steps,
            "command": " ".join([".venv/bin/python bench/int4_algos.py", *(argv if argv is not None else sys.argv[1:])]),
            "fp32_overrides": " ".join(base[:-1 - len(args.extra)] + args.extra),
            "machine": machine.describe(), "load_start": load_start, "load_end": machine.loadavg(),
            "minutes": round((time.perf_counter() - start) / 60, 1)}
    results = ROOT / "bench" / "results"
    stem = f"int4-algos-{now:%Y-%m-%d-%H%M}"
    (results / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (results / f"{stem}.md").write_text(markdown(meta, rows))
    print((results / f"{stem}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
