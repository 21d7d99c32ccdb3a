"""The lifecycle perplexity table: every way slmc makes a model, measured on the same held-out text.

    .venv/bin/python bench/lifecycle.py                 # ~20-25 min on 2 busy cores
    .venv/bin/python bench/lifecycle.py --skip-sweep    # the table only
    .venv/bin/python bench/lifecycle.py --base-steps 60 --student-steps 60 --adapt-steps 20 --sweep-steps 10

Real `slmc compile` runs (each a fresh process, `--no-cache`, so its wall time is its own cost):
a base model trained from scratch (model=tiny), then from its checkpoint a pruned + recovered
student, a student of the same shape trained from scratch and one distilled from the base, and
the base adapted by LoRA, full fine-tuning (+ int8 PTQ), QAT (int8) and quantized as it is (int8,
int4 PTQ). Every row reports the held-out perplexity of its shipped bundle (ONNX Runtime) and of
its PyTorch checkpoint, from the `stage_eval` records the compile writes into metrics.jsonl, all
on the first 8192 tokens of the same data/heldout.txt with the same tokenizer (checked by hash),
plus parameters, bundle size and wall time.

Then the issue's example sweep, `slmc compile -m device=cpu,mobile_arm64 compress=none,int8,int4`
(one process, one out_dir: the stage cache shares data, tokenizer, training and export), against
its 6 points compiled one by one with `--no-cache` into separate out_dirs.

Writes bench/results/lifecycle-<date>.json and .md (bench/.work/lifecycle/ holds the run folders).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import compile_costs, machine  # noqa: E402

WORK = ROOT / "bench" / ".work" / "lifecycle"
STUDENT_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size")


@dataclass(frozen=True)
class Row:
    """One way of making a model: its label, how it is made in words, and the compile's overrides."""

    name: str
    how: str
    overrides: tuple[str, ...]


# -- compiling and reading a run folder -------------------------------------------------------


def compile_row(row: Row, out_dir: Path, logs: Path) -> dict:
    """`slmc compile --no-cache` of one row in a fresh process; its run folder and wall time."""
    from slmc.load import load_config, run_name

    overrides = [*row.overrides, f"out_dir={out_dir}"]
    run_dir = out_dir / run_name(load_config(overrides))
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [*compile_costs.slmc_command(), "compile", "--no-cache", *overrides]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "400"})
    seconds = time.perf_counter() - start
    log = logs / f"{row.name.replace(' ', '_').replace('+', 'and')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"$ {' '.join(command)}\n{done.stdout}\n--- stderr ---\n{done.stderr}")
    if done.returncode != 0:
        raise RuntimeError(f"{row.name}: slmc compile exited {done.returncode} (log: {log}): {done.stderr[-600:]}")
    return {"run_dir": run_dir, "seconds": round(seconds, 1), "log": str(log)}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parameters(checkpoint: Path) -> int:
    """Parameters stored in model.safetensors (a tied LM head is stored, and counted, once)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(checkpoint / "model.safetensors"), framework="numpy") as handle:
        for key in handle.keys():
            shape = handle.get_slice(key).get_shape()
            count = 1
            for dim in shape:
                count *= dim
            total += count
    return total


def stage_evals(run_dir: Path) -> dict[str, dict]:
    """The compile's `stage_eval` records of metrics.jsonl, by stage."""
    records = {}
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("event") == "stage_eval":
            records[record["stage"]] = record
    return records


def read_row(row: Row, compiled: dict) -> dict:
    """What the table shows for one row, read from its run folder."""
    run_dir = compiled["run_dir"]
    manifest = json.loads((run_dir / "bundle" / "manifest.json").read_text())
    evals = stage_evals(run_dir)
    shipped = next(evals[s] for s in ("compress", "optimize", "export") if s in evals)
    bundle = run_dir / "bundle"
    return {
        "name": row.name, "how": row.how, "overrides": list(row.overrides), "run_dir": str(run_dir),
        "precision": manifest["precision"],
        "compress": manifest["metrics"].get("compress"),  # format, bytes, int4 block size
        "parameters": parameters(run_dir / "checkpoint"),
        "heldout_ppl": shipped["heldout_ppl"], "heldout_ppl_stage": shipped["stage"],
        "checkpoint_ppl": evals["train"]["heldout_ppl"],
        "prune_ppl": {k: evals["prune"][k] for k in ("heldout_ppl_before", "heldout_ppl")} if "prune" in evals else None,
        "stage_evals": evals,
        "bundle_bytes": sum((bundle / name).stat().st_size for name in manifest["hashes"]),
        "wall_s": compiled["seconds"],
        "stage_seconds": manifest["metrics"]["stage_seconds"],
        "heldout_sha256": _sha256(run_dir / "data" / "heldout.txt"),
        "tokenizer_sha256": _sha256(run_dir / "tokenizer" / "tokenizer.json"),
        "heldout_tokens": shipped.get("heldout_tokens"),
    }


# -- the rows ------------------------------------------------------------------------------


def base_row(steps: int) -> Row:
    return Row("scratch (base)", f"model=tiny pretrained from scratch, {steps} steps",
               ("model=tiny", "init=scratch", "train=pretrain", f"train.max_steps={steps}"))


def pruned_row(base: Path, steps: int) -> Row:
    return Row("pruned + recovered", f"base pruned (half the layers, half the MLP width; activation "
               f"importance), then {steps} fine-tuning steps",
               ("init=prune", f"init.path={base}", "train=finetune", f"train.max_steps={steps}"))


def student_shape(checkpoint: Path) -> tuple[str, ...]:
    """model.* overrides that build the pruned student's architecture from scratch."""
    config = json.loads((checkpoint / "config.json").read_text())
    return tuple(f"model.{key}={config[key]}" for key in STUDENT_KEYS)


def later_rows(base: Path, shape: tuple[str, ...], student_steps: int, adapt_steps: int) -> list[Row]:
    pretrained = ("init=pretrained", f"init.path={base}")
    return [
        Row("scratch (student)", f"the pruned shape, pretrained from scratch, {student_steps} steps",
            ("init=scratch", *shape, "train=pretrain", f"train.max_steps={student_steps}", f"data.tokenizer={base / 'tokenizer.json'}")),
        Row("distilled", f"the pruned shape from scratch, {student_steps} steps with the base as teacher",
            ("init=distill", f"init.distill.teacher_path={base}", *shape, "train=pretrain",
             f"train.max_steps={student_steps}")),
        Row("LoRA", f"base + LoRA adapters (r=8, q/k/v/o), {adapt_steps} steps, merged",
            (*pretrained, "train=lora", f"train.max_steps={adapt_steps}")),
        Row("finetune + PTQ int8", f"base fully fine-tuned {adapt_steps} steps, then int8 (dynamic, per channel)",
            (*pretrained, "train=finetune", f"train.max_steps={adapt_steps}", "compress=int8")),
        Row("QAT int8", f"base fine-tuned {adapt_steps} steps through int8 fake quantization, then int8",
            (*pretrained, "train=qat", f"train.max_steps={adapt_steps}", "compress=int8")),
        Row("PTQ int8", "base as it is, int8 (dynamic, per channel)", (*pretrained, "train=none", "compress=int8")),
        Row("PTQ int4", "base as it is, int4 weight-only (MatMulNBits)", (*pretrained, "train=none", "compress=int4")),
    ]


def run_rows(args, out_dir: Path, logs: Path) -> list[dict]:
    """Base first (the others start from its checkpoint), then prune (its shape is the students')."""
    done: list[dict] = []

    def run(row: Row) -> dict:
        print(f"[lifecycle] {row.name}: compiling ...", file=sys.stderr, flush=True)
        result = read_row(row, compile_row(row, out_dir, logs))
        print(f"[lifecycle] {row.name}: held-out ppl {result['heldout_ppl']:.2f} "
              f"(checkpoint {result['checkpoint_ppl']:.2f}), {result['wall_s']} s", file=sys.stderr, flush=True)
        done.append(result)
        return result

    base = Path(run(base_row(args.base_steps))["run_dir"]) / "checkpoint"
    pruned = Path(run(pruned_row(base, args.adapt_steps))["run_dir"]) / "checkpoint"
    for row in later_rows(base, student_shape(pruned), args.student_steps, args.adapt_steps):
        run(row)
    return done


# -- the sweep -----------------------------------------------------------------------------


def run_sweep(steps: int, work: Path) -> dict:
    """One `slmc compile -m` (shared stage cache) vs its points one by one with --no-cache."""
    points = compile_costs.sweep_points()
    base = [f"train.max_steps={steps}"]
    logs = work / "sweep-logs"
    print(f"[lifecycle] sweep: slmc compile -m ({len(points)} points) ...", file=sys.stderr, flush=True)
    shared = compile_costs.run_multirun(points, base, work / "sweep-shared", logs)
    log = logs / "multirun.log"
    if log.is_file():  # how many points trained (the stage cache should make it one)
        shared["train_runs"] = log.read_text().count("stage train: run the generated train.py")
    print(f"[lifecycle] sweep: {len(points)} independent compiles ...", file=sys.stderr, flush=True)
    independent = compile_costs.run_independent(points, base, work / "sweep-independent", logs)
    result = {"command": shared.get("command"), "points": points, "train_steps": steps,
              "shared": shared, "independent": independent}
    if "seconds" in shared and "total_s" in independent:
        result["independent_over_shared"] = round(independent["total_s"] / shared["seconds"], 2)
    return result


# -- results -------------------------------------------------------------------------------


def check_same_eval_set(rows: list[dict]) -> dict:
    """Every row must be measured on the same held-out text with the same tokenizer."""
    texts = {r["heldout_sha256"] for r in rows}
    tokenizers = {r["tokenizer_sha256"] for r in rows}
    tokens = {r["heldout_tokens"] for r in rows}
    return {"same_heldout_text": len(texts) == 1, "same_tokenizer": len(tokenizers) == 1,
            "heldout_sha256": sorted(texts), "tokenizer_sha256": sorted(tokenizers), "heldout_tokens": sorted(tokens)}


def markdown(result: dict) -> str:
    s, check = result["settings"], result["eval_set"]
    lines = [
        f"# slmc lifecycle: held-out perplexity per way of making the model ({result['started']})",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cpus_available']} CPUs available; "
        f"load average {result['loadavg_start']} at start, {result['loadavg_end']} at end. "
        f"Total {result['total_s'] / 60:.1f} min.",
        "",
        f"Steps: base {s['base_steps']}, students {s['student_steps']}, adaptation / recovery {s['adapt_steps']} "
        "(batch and sequence length: each train option's defaults). Every row is one `slmc compile --no-cache`.",
        f"Held-out set: the first {check['heldout_tokens'][0]} tokens of data/heldout.txt, the same text "
        f"({'yes' if check['same_heldout_text'] else 'NO'}) and tokenizer "
        f"({'yes' if check['same_tokenizer'] else 'NO'}) in every row; perplexity from the compile's "
        "`stage_eval` records (metrics.jsonl).",
        "",
        "| model | how | params | bundle | held-out ppl (bundle, ORT) | checkpoint ppl (PyTorch fp32) | bundle MB | wall s (train s) |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        train = r["stage_seconds"].get("train")
        lines.append(
            f"| {r['name']} | {r['how']} | {r['parameters'] / 1e6:.2f}M | {_precision(r)} | {r['heldout_ppl']:.2f} "
            f"| {r['checkpoint_ppl']:.2f} | {r['bundle_bytes'] / 1e6:.2f} | {r['wall_s']:.0f} ({train or 0:.0f}) |")
    pruned = next((r for r in result["rows"] if r["prune_ppl"]), None)
    if pruned:
        p = pruned["prune_ppl"]
        lines += ["", f"Pruning alone: held-out perplexity {p['heldout_ppl_before']:.2f} (base) → "
                      f"{p['heldout_ppl']:.2f} (pruned, before recovery) → {pruned['checkpoint_ppl']:.2f} (recovered)."]
    lines += sweep_markdown(result.get("sweep"))
    return "\n".join(lines) + "\n"


def _precision(row: dict) -> str:
    block = (row.get("compress") or {}).get("block_size")
    return f"{row['precision']} (block {block})" if block else row["precision"]


def sweep_markdown(sweep: dict | None) -> list[str]:
    if not sweep:
        return ["", "Sweep: skipped (--skip-sweep)."]
    shared, independent = sweep["shared"], sweep["independent"]
    if "error" in shared or "error" in independent:
        return ["", f"Sweep failed: {shared.get('error') or independent.get('error')}"]
    return [
        "", f"## Sweep: `{sweep['command']}`", "",
        f"{len(sweep['points'])} points, train.max_steps={sweep['train_steps']}.", "",
        "| how | wall s | bundles | training runs |", "|---|---:|---:|---:|",
        f"| one `slmc compile -m`, shared stage cache | {shared['seconds']:.0f} | {len(shared['bundles'])} "
        f"| {shared.get('train_runs', '?')} |",
        f"| each point alone, `--no-cache`, own out_dir | {independent['total_s']:.0f} | "
        f"{len(independent['points'])} | {len(independent['points'])} |",
        "", f"One by one takes {sweep['independent_over_shared']}× the sweep's wall time.",
    ]


def write_results(result: dict, out: Path, started: dt.datetime) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"lifecycle-{started:%Y-%m-%d}"
    if stem.with_suffix(".json").exists():
        stem = out / f"lifecycle-{started:%Y-%m-%d-%H%M}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    return stem.with_suffix(".md")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/lifecycle.py", description=__doc__.splitlines()[0])
    parser.add_argument("--base-steps", type=int, default=200, help="training steps of the base (teacher) model")
    parser.add_argument("--student-steps", type=int, default=200,
                        help="steps of the students trained from scratch (plain and distilled)")
    parser.add_argument("--adapt-steps", type=int, default=60,
                        help="steps of pruning recovery, LoRA, fine-tuning and QAT")
    parser.add_argument("--sweep-steps", type=int, default=20, help="train.max_steps of the sweep's points")
    parser.add_argument("--skip-sweep", action="store_true", help="only the perplexity table")
    parser.add_argument("--work", type=Path, default=WORK, help="run folders and logs (emptied first)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began, started = time.perf_counter(), dt.datetime.now()
    shutil.rmtree(args.work, ignore_errors=True)
    result = {"started": f"{started:%Y-%m-%d %H:%M}", "machine": machine.describe(), "loadavg_start": machine.loadavg(),
              "settings": {k: v for k, v in vars(args).items() if k.endswith("steps")}}
    try:
        result["rows"] = run_rows(args, args.work / "runs", args.work / "logs")
    except RuntimeError as exc:
        print(f"[lifecycle] {exc}", file=sys.stderr)
        return 1
    result["eval_set"] = check_same_eval_set(result["rows"])
    result["sweep"] = None if args.skip_sweep else run_sweep(args.sweep_steps, args.work)
    result["loadavg_end"], result["total_s"] = machine.loadavg(), round(time.perf_counter() - began, 1)
    path = write_results(result, args.out, started)
    print(path.read_text())
    print(f"[lifecycle] wrote {path} and {path.with_suffix('.json')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
