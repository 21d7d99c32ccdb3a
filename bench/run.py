"""The benchmark, in one command: slmc's bundles against PyTorch eager, ORT GenAI and Optimum.

    python bench/run.py [--models tiny,small] [--large] [--batches 1,4] [--runs 5] [--quick] [--skip-optimum]

Builds every artifact from one checkpoint (bench/prepare.py), measures prefill latency,
decode tokens/s and peak RSS round by round in fresh processes (bench/measure.py),
measures this machine's memory bandwidth for the decode bound (bench/bandwidth.py),
times slmc's compiler (bench/compile_costs.py), and writes results/<date>.json and
.md (bench/report.py). See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import analysis, compile_costs, graphs, machine, prepare, report  # noqa: E402
from bench.measure import GENAI_SAME_BLOCK, SYSTEMS, measure_rounds, prompts  # noqa: E402

WORK = ROOT / "bench" / ".work"
NOTES = [
    "Same weights everywhere: slmc compiles the checkpoint (tiny: 60 training steps; small/large: train=none, i.e. "
    "random initial weights — a speed benchmark needs the shapes, not a good model); PyTorch eager, the ORT GenAI "
    "builder and Optimum's exporter read that checkpoint folder; slmc's int8/int4 bundles reuse it via the stage "
    "cache.",
    "prefill = prompt handed over → first new token exists; decode tok/s = batch × (new − 1) / time from the "
    "first to the last new token; every system decodes exactly the requested tokens (EOS ignored or suppressed).",
    "Bound = batch × bandwidth / (weight bytes read per step + batch × KV bytes per row at the mean context); weight "
    "bytes = initializers (or safetensors tensors) except an embedding table only used for the token lookup.",
    "ORT GenAI int4: the builder's CPU defaults (accuracy_level=4 block_size=32 is_symmetric=true); "
    "\"ort-genai int4, slmc's block\": the same at the block size slmc's compress=int4 chose (block_size=auto).",
    "slmc int8 (dynamic MatMulInteger) has no peer at the same precision here; its row has no ratio.",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,small",
                        help="comma list of tiny, small, smollm2-135m, qwen2.5-0.5b (the last two: published shapes at "
                             "full depth, random weights; default tiny,small)")
    parser.add_argument("--large", action="store_true", help="also the ~100M-parameter variant (slow to build)")
    parser.add_argument("--batches", default="1,4", help="comma list of batch sizes (default 1,4)")
    parser.add_argument("--runs", type=int, default=5, help="rounds: measured runs per system and cell (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up runs in each process before the timed one")
    parser.add_argument("--warmup-tokens", type=int, default=0,
                        help="new tokens of each warm-up run (default 0: as many as a timed run)")
    parser.add_argument("--threads", default="2",
                        help="intra-op threads for every system: a comma list of counts and/or 'default' (every "
                             "system at its own defaults), each a condition measured side by side (default 2)")
    parser.add_argument("--busy", action="store_true",
                        help="also measure every system at its defaults with a background busy process "
                             "(one CPU-bound Python loop) and without it")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--quick", action="store_true",
                        help="~2 minutes: tiny, batch 1, 3 rounds, no Optimum, no sweep")
    parser.add_argument("--skip-optimum", action="store_true", help="leave Optimum out (its venv takes minutes)")
    parser.add_argument("--skip-compile-costs", action="store_true", help="do not time slmc check/compile/sweep")
    parser.add_argument("--sweep-steps", type=int, default=20, help="train.max_steps of the sweep's tiny model")
    parser.add_argument("--sweep-independent", choices=("estimate", "measure"), default="estimate",
                        help="independent compiles: estimated from the sweep (default) or measured (+~15 min)")
    parser.add_argument("--multirun", action="store_true", help="also time the sweep as one `slmc compile -m`")
    parser.add_argument("--rebuild", action="store_true",
                        help="recompile slmc bundles through the stage cache (default: reuse complete bundles)")
    parser.add_argument("--fresh", action="store_true", help="recompile slmc bundles with --no-cache (retrains tiny)")
    parser.add_argument("--generated", type=Path, default=WORK / "generated",
                        help="slmc's out_dir for the bundles (a new folder: everything compiled by today's slmc, "
                             "sharing one stage cache; default bench/.work/generated)")
    parser.add_argument("--precisions", default="fp32,int8,int4",
                        help="slmc bundles to build and measure (default fp32,int8,int4; the real shapes' targets "
                             "need fp32,int4)")
    parser.add_argument("--int4-block", type=int, default=None,
                        help="pin slmc's int4 compress.block_size (default: block_size=auto, which quantizes and "
                             "evaluates every candidate: minutes each at real size)")
    parser.add_argument("--prepare-only", action="store_true",
                        help="build (or find cached) every artifact, then stop: the real shapes take minutes")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed to one measurement process")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default bench/results; bench/.work/results with --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.batches, args.runs, args.skip_optimum = "tiny", "1", min(args.runs, 3), True
        args.warmup_tokens = args.warmup_tokens or 32
    args.models = [m for m in args.models.split(",") if m] + (["large"] if args.large else [])
    args.batches = [int(b) for b in args.batches.split(",") if b]
    try:
        args.threads = [None if t == "default" else int(t) for t in args.threads.split(",") if t]
    except ValueError:
        parser.error(f"--threads: a comma list of integers and/or 'default', got {args.threads!r}")
    if not args.threads or any(t is not None and t < 1 for t in args.threads):
        parser.error("--threads: give at least one count >= 1 or 'default'")
    args.conditions = conditions(args.threads, args.busy)
    if args.int4_block:
        os.environ[prepare.INT4_BLOCK_ENV] = str(args.int4_block)
    args.precisions = [p for p in args.precisions.split(",") if p]
    if not args.precisions or set(args.precisions) - set(prepare.COMPRESS):
        parser.error(f"--precisions: choose from {sorted(prepare.COMPRESS)}, got {args.precisions}")
    unknown = [m for m in args.models if m not in prepare.MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {sorted(prepare.MODELS)}")
    if args.out is None:
        args.out = WORK / "results" if args.quick else ROOT / "bench" / "results"
    return args


def condition_label(threads: int | None, busy: bool) -> str:
    base = "defaults" if threads is None else f"{threads} thread{'s' * (threads > 1)}"
    return f"{base}, busy" if busy else base


def conditions(threads: list[int | None], busy: bool) -> list[dict]:
    """The conditions every cell is measured under, side by side in each round: each thread setting
    idle, and with --busy every system at its defaults both idle and with a busy process."""
    wanted = [(t, False) for t in dict.fromkeys(threads)]
    if busy:
        wanted += [(None, False)] * ((None, False) not in wanted) + [(None, True)]
    return [{"condition": condition_label(t, b), "threads": t, "busy": b} for t, b in wanted]


def _fixed_threads(args) -> int:
    """A thread count for the harness's own helpers (bandwidth, ORT node counts)."""
    return max((t for t in args.threads if t is not None), default=2)


class _Optimum:
    """The Optimum venv, set up at most once per run; remembers why it is unavailable."""

    def __init__(self, skip: bool):
        self.python, self.reason = None, "skipped (--skip-optimum)" if skip else None

    def get(self) -> Path:
        if self.reason:
            raise prepare.Unavailable(self.reason)
        if self.python is None:
            try:
                self.python = prepare.optimum_python(WORK)
            except prepare.Unavailable as exc:
                self.reason = str(exc)
                raise
        return self.python


def _artifact(name: str, precision: str, model: str, run_dirs: dict, checkpoint: Path, optimum: _Optimum):
    """(python, artifact folder, ONNX file or None) for one system of one model."""
    if name.startswith("slmc"):
        bundle = run_dirs[precision] / "bundle"  # present: failed precisions are skipped by the caller
        return sys.executable, bundle, bundle / "model.onnx"
    if name.startswith("torch"):
        return sys.executable, checkpoint, None
    if name == GENAI_SAME_BLOCK:
        block = _slmc_block_size(run_dirs)
        out = prepare.genai_model(checkpoint, precision, WORK / "genai" / f"{model}-{precision}-b{block}", WORK,
                                  block_size=block)
        return sys.executable, out, out / "model.onnx"
    if name.startswith("ort-genai"):
        out = prepare.genai_model(checkpoint, precision, WORK / "genai" / f"{model}-{precision}", WORK)
        return sys.executable, out, out / "model.onnx"
    python = optimum.get()
    out = prepare.optimum_model(python, checkpoint, WORK / "optimum" / model, WORK)
    return python, out, out / "model.onnx"


def _slmc_block_size(run_dirs: dict) -> int:
    """The int4 block size in slmc's int4 bundle; Unavailable when there is none or it is the builder's 32."""
    if "int4" not in run_dirs:
        raise prepare.Unavailable("no slmc int4 bundle")
    manifest = json.loads((run_dirs["int4"] / "bundle" / "manifest.json").read_text())
    block = (manifest.get("metrics", {}).get("compress") or {}).get("block_size")
    if not block or block == 32:
        raise prepare.Unavailable(f"slmc's int4 block size is {block or 'unknown'}: the same as ort-genai int4")
    return int(block)


def _slmc_bundles(model: str, args, log) -> tuple[dict, dict, dict]:
    """slmc's three bundles of one model: run folders, how each was obtained, failures."""
    run_dirs, sources, failed = {}, {}, {}
    mode = "fresh" if args.fresh else "rebuild" if args.rebuild else "reuse"
    for precision in args.precisions:
        log(f"prepare {model}: slmc compile {precision} ({mode})")
        try:
            run_dirs[precision], sources[precision] = prepare.slmc_bundle(
                model, precision, WORK, mode, out_dir=args.generated.resolve())
        except prepare.Unavailable as exc:
            failed[f"slmc {precision}"] = str(exc)
            log(f"  slmc {precision}: unavailable ({exc})")
    if not run_dirs:
        raise prepare.Unavailable(f"no slmc bundle could be compiled: {failed}")
    return run_dirs, sources, failed


def _bundle_info(run_dir: Path, how: str) -> dict:
    provenance = json.loads((run_dir / "bundle" / "manifest.json").read_text()).get("provenance", {})
    return {"run_dir": str(run_dir), "how": how, "created": provenance.get("created")}


def prepare_model(model: str, args, optimum: _Optimum, log) -> dict:
    """Artifacts, graph statistics and architecture of one model; systems that cannot run say why."""
    run_dirs, sources, failed = _slmc_bundles(model, args, log)
    first = next(iter(run_dirs.values()))
    checkpoint = first / "checkpoint"
    hashes = {prepare.sha256(d / "checkpoint" / "model.safetensors") for d in run_dirs.values()}
    config = json.loads((checkpoint / "config.json").read_text())
    manifest = json.loads((first / "bundle" / "manifest.json").read_text())
    info = {"checkpoint": str(checkpoint), "parameters_m": round(manifest["model"]["parameters"] / 1e6, 1),
            "weights_note": ("trained 60 steps" if model == "tiny" else
                             "published shape at full depth, random weights" if model in prepare.REAL_SHAPES
                             else "random init (train=none)"),
            "config": {k: config.get(k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                 "num_key_value_heads", "intermediate_size", "vocab_size",
                                                 "tie_word_embeddings")},
            "bundles": {p: _bundle_info(d, sources[p]) for p, d in run_dirs.items()},
            "same_checkpoint_in_every_bundle": len(hashes) == 1,
            "systems": {}, "unavailable": dict(failed), "graphs": {}, "weight_bytes": {}}
    for system in SYSTEMS:
        if system.name in failed:
            continue
        if system.module == "slmc_bundle" and system.precision not in args.precisions:
            continue  # left out by --precisions: no row at all
        try:
            log(f"prepare {model}: {system.name}")
            python, artifact, onnx_file = _artifact(system.name, system.precision, model, run_dirs, checkpoint, optimum)
        except prepare.Unavailable as exc:
            info["unavailable"][system.name] = str(exc)
            log(f"  {system.name}: unavailable ({exc})")
            continue
        info["systems"][system.name] = {"python": str(python), "module": system.module, "artifact": str(artifact)}
        _add_stats(info, system.name, onnx_file, checkpoint, _fixed_threads(args))
    return info


def _add_stats(info: dict, name: str, onnx_file: Path | None, checkpoint: Path, threads: int) -> None:
    """Graph statistics (ONNX systems) and the weight bytes a decode step reads (every system)."""
    stats = graphs.graph_stats(onnx_file) if onnx_file else graphs.safetensors_stats(checkpoint)
    if onnx_file:
        stats["nodes_after_ort"] = graphs.ort_optimized_nodes(onnx_file, threads)
        info["graphs"][name] = {k: stats[k] for k in ("nodes", "nodes_after_ort", "fused_ops", "ops_top")}
    info["weight_bytes"][name] = stats["bytes_read_per_token"]
    info["systems"][name]["weights"] = {k: v for k, v in stats.items() if "bytes" in k}


def _special_ids(config: dict) -> set[int]:
    special = set()
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = config.get(key)
        special.update(value if isinstance(value, list) else [value] if value is not None else [])
    return special


def analyse(models: dict, records: list[dict], bandwidth_gbps: float, args) -> None:
    """Fill each model's cells (batch -> system -> row) from the records: medians, ratios, bounds."""
    for model, info in models.items():
        if "error" in info:
            continue
        cfg = info["config"]
        heads = cfg["num_attention_heads"]
        head_dim = json.loads((Path(info["checkpoint"]) / "config.json").read_text()).get("head_dim") or \
            cfg["hidden_size"] // heads
        kv_row = analysis.kv_bytes_per_row(cfg["num_hidden_layers"], cfg["num_key_value_heads"], head_dim,
                                           analysis.average_context(args.prompt_tokens, args.new_tokens))
        info["kv_bytes_per_row_at_mean_context"] = kv_row
        info["conditions"] = {}
        for condition in args.conditions:
            label, cells = condition["condition"], {}
            for batch in args.batches:
                mine = [r for r in records if r["model"] == model and r["batch"] == batch
                        and r.get("condition", label) == label]
                by_system = {s.name: [r for r in mine if r["system"] == s.name] for s in SYSTEMS
                             if s.name in info["systems"]}
                rows = analysis.cell_rows(by_system)
                analysis.add_ratios(rows)
                analysis.add_agreement(rows)
                analysis.add_bounds(rows, info["weight_bytes"], kv_row, bandwidth_gbps, batch)
                for name, reason in info["unavailable"].items():
                    rows[name] = {"unavailable": reason, "decode_tokens_per_s": analysis.summarize([])}
                cells[batch] = {s.name: rows[s.name] for s in SYSTEMS if s.name in rows}
            info["conditions"][label] = cells
        info["cells"] = info["conditions"][args.conditions[0]["condition"]]  # the first condition, as before


def _results_path(out: Path, started: dt.datetime) -> Path:
    path = out / f"{started:%Y-%m-%d}.json"
    return path if not path.exists() else out / f"{started:%Y-%m-%d-%H%M}.json"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began, started = time.perf_counter(), dt.datetime.now()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - began:7.1f}s] {message}", flush=True)

    meta = {"started": started.isoformat(timespec="seconds"),
            "command": " ".join(["python bench/run.py", *sys.argv[1:]]),
            "machine": machine.describe(), "loadavg_start": machine.loadavg(),
            "settings": {"models": args.models, "batches": args.batches, "rounds": args.runs, "warmup": args.warmup,
                         "warmup_tokens": args.warmup_tokens or args.new_tokens,
                         "threads": args.threads, "conditions": args.conditions, "prompt_tokens": args.prompt_tokens,
                         "new_tokens": args.new_tokens, "genai_int4_options": prepare.GENAI_INT4_OPTIONS,
                         "slmc_int4_block": args.int4_block or "auto", "precisions": args.precisions}}
    log(f"machine: {meta['machine']['cpu']}, load {meta['loadavg_start']}")
    optimum, models, cells = _Optimum(args.skip_optimum), {}, []
    if args.prepare_only:
        for model in args.models:
            try:
                info = prepare_model(model, args, optimum, log)
                log(f"{model}: ready: {sorted(info['systems'])}; unavailable: {info['unavailable']}")
            except prepare.Unavailable as exc:
                log(f"{model}: not ready ({exc})")
        return 0
    bandwidth_runs = [machine.bandwidth(_fixed_threads(args), 256 if args.quick else 512)]
    log(f"memory bandwidth: {bandwidth_runs[0]['gbps']} GB/s")
    for model in args.models:
        try:
            models[model] = prepare_model(model, args, optimum, log)
        except prepare.Unavailable as exc:
            models[model] = {"error": str(exc)}
            log(f"{model}: not measured ({exc})")
            continue
        config = json.loads((Path(models[model]["checkpoint"]) / "config.json").read_text())
        for batch in args.batches:
            ids = prompts(config["vocab_size"], _special_ids(config), batch, args.prompt_tokens)
            cells += [{"model": model, "batch": batch, "systems": models[model]["systems"], "prompts": ids, **c}
                      for c in args.conditions]
    settings = {"new_tokens": args.new_tokens, "threads": args.threads[0], "warmup": args.warmup,
                "warmup_tokens": args.warmup_tokens or args.new_tokens, "timeout": args.timeout}
    records = measure_rounds(cells, args.runs, settings, log)
    bandwidth_runs.append(machine.bandwidth(_fixed_threads(args), 256 if args.quick else 512))
    bandwidth = {**max(bandwidth_runs, key=lambda b: b["gbps"]), "runs": [b["gbps"] for b in bandwidth_runs]}
    analyse(models, records, bandwidth["gbps"], args)
    costs = None
    if not args.skip_compile_costs:
        log("compiler costs: slmc check, plan-only" + ("" if args.quick else ", sweep"))
        costs = compile_costs.measure_all(WORK / "costs", check_runs=3 if args.quick else 5, sweep=not args.quick,
                                          sweep_steps=args.sweep_steps, independent=args.sweep_independent,
                                          multirun=args.multirun)
    targets = analysis.evaluate_targets({m: i.get("cells", {}) for m, i in models.items()}, costs,
                                        {m: i.get("conditions", {}) for m, i in models.items()})
    meta.update(loadavg_end=machine.loadavg(), finished=dt.datetime.now().isoformat(timespec="seconds"),
                seconds=round(time.perf_counter() - began, 1))
    result = {"meta": meta, "bandwidth": bandwidth, "models": models, "compile_costs": costs, "targets": targets,
              "notes": NOTES, "records": records}
    args.out.mkdir(parents=True, exist_ok=True)
    path = _results_path(args.out, started)
    path.write_text(json.dumps(result, indent=1, default=str))
    text = report.render(result)
    path.with_suffix(".md").write_text(text)
    print(text)
    log(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
