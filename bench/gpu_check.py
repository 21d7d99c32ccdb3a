"""GPU check (issue 13, item 5): slmc's fp16 bundle of the Qwen2.5-0.5B shape on ONNX Runtime's CUDA
execution provider against PyTorch CUDA eager `generate` (and ORT GenAI where its CUDA build is
installed): decode tok/s at batch 1 and 8 and the % of the GPU's memory-bandwidth bound.

    python bench/gpu_check.py                      # on a CUDA machine (~10 min: build, then measure)
    python bench/gpu_check.py --dry-run            # anywhere: the plan and the bound arithmetic, no GPU
    python bench/gpu_check.py --dry-run --checkpoint DIR   # + `slmc check` of the GPU compile on DIR

Needs on the GPU machine: onnxruntime-gpu (CUDAExecutionProvider) in place of onnxruntime, a CUDA
build of torch, and for the ORT GenAI row onnxruntime-genai-cuda; what is missing is named in the
result, not guessed. Weights are random (a published config.json at full depth, seed 0, built by
bench/prepare.real_checkpoint): speed needs the shape, not a good model.

Bound: batch x bandwidth / (weight bytes read per step + batch x KV bytes per row at the mean
context), fp16; weight bytes: every parameter once (a tied embedding is read once, as the LM head;
an untied one's lookup table is not read whole). Bandwidth: --bandwidth-gbps, else the GPU's
datasheet figure (GPU_BANDWIDTH_GBPS, matched by name), else memory clock x bus width from torch.
Writes <out>/gpu-check-<date>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import analysis, machine  # noqa: E402  (stdlib + numpy)
from bench.measure import prompts, run_worker  # noqa: E402

WORK = ROOT / "bench" / ".work" / "gpu"
GPU_BANDWIDTH_GBPS = {  # datasheet peak HBM/GDDR bandwidth, GB/s; longest name first wins
    "H200": 4800, "H100 SXM": 3350, "H100 NVL": 3900, "H100 PCIe": 2000, "H100": 3350, "GH200": 4000,
    "A100-SXM4-80GB": 2039, "A100 80GB PCIe": 1935, "A100": 1555, "L40S": 864, "L4": 300, "A10G": 600,
    "A10": 600, "RTX 4090": 1008, "T4": 320,
}
SLMC_OVERRIDES = ["init=pretrained", "train=none", "device=gpu_server", "runtime=ort", "compress=fp16"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/gpu_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="qwen2.5-0.5b", help="a name in slmc.families.published")
    parser.add_argument("--checkpoint", type=Path, help="use this Hugging Face folder instead of building the shape")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3, help="rounds, each system once per round in a fresh process")
    parser.add_argument("--bandwidth-gbps", type=float, help="the GPU's memory bandwidth (default: by name)")
    parser.add_argument("--skip-genai", action="store_true", help="leave ORT GenAI out")
    parser.add_argument("--dry-run", action="store_true",
                        help="no GPU: write the plan and the bound arithmetic (and `slmc check` with --checkpoint)")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",") if b]
    return args


def model_config(args) -> dict:
    """config.json of the checkpoint, or the published one when nothing is built yet."""
    if args.checkpoint:
        return json.loads((args.checkpoint / "config.json").read_text())
    from slmc.families.published import PUBLISHED

    return dict(PUBLISHED[args.shape])


def decode_bytes(config: dict, batch: int, context: float, dtype_bytes: int = 2) -> dict:
    """Bytes one decode step reads: weights once, KV of every row at `context` tokens (pure arithmetic)."""
    hidden, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    q, kv = heads * head_dim, kv_heads * head_dim
    bias = q + 2 * kv if config.get("model_type") == "qwen2" or config.get("attention_bias") else 0
    per_layer = hidden * q + 2 * hidden * kv + q * hidden + bias + 3 * hidden * config["intermediate_size"] + 2 * hidden
    read_params = layers * per_layer + hidden + vocab * hidden  # + final norm + LM head (the tied table, read once)
    weights = read_params * dtype_bytes
    kv_row = analysis.kv_bytes_per_row(layers, kv_heads, head_dim, context, dtype_bytes)
    return {"weight_params_read": read_params, "weight_bytes": weights, "kv_bytes_per_row": kv_row,
            "bytes_per_step": weights + batch * kv_row}


def gpu_bandwidth(args) -> dict:
    """{"name", "gbps", "source"} of the GPU here (nvidia-smi / torch), or of --bandwidth-gbps."""
    name = None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30)
        name = done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    if args.bandwidth_gbps:
        return {"name": name, "gbps": args.bandwidth_gbps, "source": "--bandwidth-gbps"}
    if name:
        for key in sorted(GPU_BANDWIDTH_GBPS, key=len, reverse=True):
            if key.lower() in name.lower():
                return {"name": name, "gbps": GPU_BANDWIDTH_GBPS[key], "source": f"datasheet ({key})"}
        try:
            import torch

            props = torch.cuda.get_device_properties(0)
            gbps = 2 * props.memory_clock_rate * 1e3 * props.memory_bus_width / 8 / 1e9
            return {"name": name, "gbps": round(gbps, 1), "source": "torch: 2 x memory clock x bus width"}
        except Exception as exc:  # noqa: BLE001 - reported: the bound then needs --bandwidth-gbps
            return {"name": name, "gbps": None, "source": f"unknown GPU; pass --bandwidth-gbps ({exc})"}
    return {"name": None, "gbps": None, "source": "no GPU found (nvidia-smi); pass --bandwidth-gbps"}


def plan(args, checkpoint: Path) -> dict:
    """The commands the check runs, in order (the dry run writes only these and the arithmetic)."""
    out_dir = args.work / "generated"
    slmc = [sys.executable, "-m", "slmc.cli"]
    compile_args = [*SLMC_OVERRIDES, f"init.path={checkpoint}", f"export.max_batch_size={max(args.batches)}",
                    f"export.max_seq_len={args.prompt_tokens + args.new_tokens}",
                    f"generation.max_new_tokens={args.new_tokens}", f"out_dir={out_dir}"]
    genai_out = args.work / "genai-fp16-cuda"
    return {"checkpoint": str(checkpoint),
            "slmc_check": [*slmc, "check", *compile_args[:-1]],
            "slmc_compile": [*slmc, "compile", *compile_args],
            "genai_build": [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(checkpoint),
                            "-o", str(genai_out), "-p", "fp16", "-e", "cuda", "-c", str(args.work / "genai-cache")],
            "genai_out": str(genai_out),
            "systems": ["slmc fp16 (CUDA EP)", "torch-cuda fp16 eager"] + ([] if args.skip_genai else ["ort-genai fp16 cuda"])}


def missing_on_this_machine() -> list[str]:
    """What the GPU run needs that this Python lacks (named, so the result says it, not a traceback)."""
    missing = []
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            missing.append("onnxruntime-gpu (this onnxruntime has no CUDAExecutionProvider)")
    except ImportError:
        missing.append("onnxruntime-gpu")
    try:
        import torch

        if not torch.cuda.is_available():
            missing.append(f"a CUDA device visible to torch (torch {torch.__version__})")
    except ImportError:
        missing.append("torch with CUDA")
    return missing


def _genai_cuda() -> str | None:
    """None when ORT GenAI can run on CUDA here; else why not."""
    try:
        import onnxruntime_genai as og
    except ImportError:
        return "onnxruntime-genai-cuda is not installed"
    available = getattr(og, "is_cuda_available", lambda: False)()
    return None if available else f"onnxruntime-genai {og.__version__} here is not its CUDA build " \
                                  "(pip install onnxruntime-genai-cuda)"


def _run(cmd: list[str], log: Path) -> subprocess.CompletedProcess:
    log.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    log.write_text(f"$ {' '.join(cmd)}\n{done.stdout}\n--- stderr ---\n{done.stderr}")
    return done


def build(args, steps: dict) -> tuple[dict, dict]:
    """slmc's CUDA fp16 bundle and (where it runs) ORT GenAI's: artifacts and why any is unavailable."""
    artifacts, unavailable = {}, {}
    done = _run(steps["slmc_compile"], args.work / "logs" / "slmc-compile.log")
    folders = [line.split("run folder:", 1)[1].strip() for line in done.stdout.splitlines() if "run folder:" in line]
    if done.returncode == 0 and folders:
        artifacts["slmc fp16 (CUDA EP)"] = ("slmc_bundle", str(Path(folders[-1]) / "bundle"))
    else:
        unavailable["slmc fp16 (CUDA EP)"] = f"slmc compile failed (see {args.work / 'logs'})"
    artifacts["torch-cuda fp16 eager"] = ("torch_cuda", steps["checkpoint"])
    if not args.skip_genai:
        why = _genai_cuda()
        if why is None:
            done = _run(steps["genai_build"], args.work / "logs" / "genai-build.log")
            why = None if done.returncode == 0 else f"builder failed (see {args.work / 'logs'})"
        if why is None:
            artifacts["ort-genai fp16 cuda"] = ("ort_genai", steps["genai_out"])
        else:
            unavailable["ort-genai fp16 cuda"] = why
    return artifacts, unavailable


def rows_for(records: list[dict], bytes_by_batch: dict, gbps: float | None) -> dict:
    """batch -> system -> decode median, prefill median, bound and % of bound."""
    table = {}
    for batch, need in bytes_by_batch.items():
        bound = batch * gbps * 1e9 / need["bytes_per_step"] if gbps else None
        for system in sorted({r["system"] for r in records if r["batch"] == batch}):
            runs = [run for r in records if r["batch"] == batch and r["system"] == system and r.get("ok")
                    for run in r["runs"]]
            decode = analysis.summarize(run["decode_tokens_per_s"] for run in runs)["median"]
            table.setdefault(batch, {})[system] = {
                "decode_tokens_per_s": decode,
                "prefill_ms": analysis.summarize(run["prefill_ms"] for run in runs)["median"],
                "bound_tokens_per_s": bound,
                "percent_of_bound": 100 * decode / bound if decode and bound else None,
                "errors": sorted({r["error"] for r in records if r["batch"] == batch and r["system"] == system
                                  and not r.get("ok")})}
    return table


def markdown(result: dict) -> str:
    gpu = result["gpu"]
    lines = [f"# GPU check — {result['started'][:10]}", "",
             f"- GPU: {gpu['name'] or 'none'}; bandwidth {gpu['gbps'] or '–'} GB/s ({gpu['source']})",
             f"- shape {result['shape']} at full depth, **random weights**, fp16; prompt {result['prompt_tokens']}, "
             f"{result['new_tokens']} new tokens; command `{result['command']}`",
             f"- dry run: {result['dry_run']}; missing here: {', '.join(result['missing']) or 'nothing'}", "",
             "| batch | system | decode tok/s | prefill ms | bound tok/s | % of bound |", "|---:|---|---:|---:|---:|---:|"]
    for batch, need in result["bytes_per_step"].items():
        for system, row in result.get("rows", {}).get(batch, {}).items():
            lines.append(f"| {batch} | {system} | {row['decode_tokens_per_s'] or '–'} | {row['prefill_ms'] or '–'} "
                         f"| {round(row['bound_tokens_per_s'] or 0) or '–'} "
                         f"| {round(row['percent_of_bound'], 1) if row['percent_of_bound'] else '–'} |")
        lines.append(f"| {batch} | (bytes read per step: {need['bytes_per_step'] / 2**20:,.1f} MiB) | | | "
                     f"{round(need['bound_tokens_per_s']) if need.get('bound_tokens_per_s') else '–'} | |")
    for system, why in result.get("unavailable", {}).items():
        lines.append(f"\n- {system}: unavailable: {why}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now()
    config = model_config(args)
    gpu = gpu_bandwidth(args)
    context = analysis.average_context(args.prompt_tokens, args.new_tokens)
    need = {b: decode_bytes(config, b, context) for b in args.batches}
    for b, n in need.items():
        n["bound_tokens_per_s"] = b * gpu["gbps"] * 1e9 / n["bytes_per_step"] if gpu["gbps"] else None
    checkpoint = args.checkpoint or (args.work / "checkpoints" / args.shape)
    steps = plan(args, checkpoint.resolve())
    result = {"started": started.isoformat(timespec="seconds"), "command": " ".join(["python bench/gpu_check.py",
                                                                                      *sys.argv[1:]]),
              "shape": args.shape if not args.checkpoint else str(args.checkpoint), "dry_run": args.dry_run,
              "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "gpu": gpu,
              "machine": machine.describe(), "bytes_per_step": need, "plan": steps,
              "missing": missing_on_this_machine()}
    if args.dry_run:
        if args.checkpoint:  # the CPU-side check of the GPU compile: every rule on this checkpoint
            done = _run(steps["slmc_check"], args.work / "logs" / "slmc-check.log")
            result["slmc_check"] = {"ok": done.returncode == 0, "output": (done.stdout + done.stderr).strip()[-2000:]}
    elif result["missing"]:
        print("gpu_check: cannot run here: " + "; ".join(result["missing"]), file=sys.stderr)
        return 2
    else:
        if not args.checkpoint:
            from bench.prepare import real_checkpoint

            real_checkpoint(args.shape, args.work)
        artifacts, result["unavailable"] = build(args, steps)
        special = {config.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")} - {None}
        records = []
        for round_index in range(args.runs):
            for batch in args.batches:
                ids = prompts(config["vocab_size"], special, batch, args.prompt_tokens)
                for name, (module, artifact) in artifacts.items():
                    spec = {"system": module, "artifact": artifact, "prompts": ids, "new_tokens": args.new_tokens,
                            "threads": None, "warmup": 1, "warmup_tokens": 16, "runs": 1}
                    records.append({"round": round_index, "batch": batch, "system": name,
                                    **run_worker(Path(sys.executable), spec, args.timeout)})
        result["records"] = records
        result["rows"] = rows_for(records, need, gpu["gbps"])
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu-check{'-dry-run' if args.dry_run else ''}-{started:%Y-%m-%d-%H%M}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    path.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {path}")
    return 1 if result.get("slmc_check", {}).get("ok") is False else 0


if __name__ == "__main__":
    sys.exit(main())
