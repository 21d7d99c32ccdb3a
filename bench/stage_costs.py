"""What the compile host pays to export, fuse and quantize a real-size checkpoint: peak RSS and wall time.

    .venv/bin/python bench/stage_costs.py                          # SmolLM2-135M then Qwen2.5-0.5B, ~1 h on 2 busy cores
    .venv/bin/python bench/stage_costs.py --shapes smollm2-135m --skip-compile
    .venv/bin/python bench/stage_costs.py --layers 2 --out bench/.work/stage-costs/results   # plumbing check, minutes

Each shape is a published config.json (`slmc.families.published`) at full depth, built by
transformers itself (`AutoConfig.for_model` + `AutoModelForCausalLM.from_config`, random
weights, seed 0) and written with `save_pretrained`. Then every stage runs in a fresh process
of its own (`--stage`), calling the library functions the compile's stages call:

- export: `slmc.export.export_decoder` + `check_parity` (what the export stage runs before its perplexities)
- optimize: `optimize_for_ort` (the fused ONNX Runtime graph, with its parity post-condition)
- compress-int8 / compress-int4: `quantize` of the fused graph (target ort; int4 at block 32)
- perplexity: `onnx_perplexity` of the exported graph through slmc.runtime, on the compile's
  token count and window (random ids: with random weights the value only proves it ran)
- compile-int4 (unless --skip-compile; compile-int8 and compile-none on request): one whole
  `slmc compile init=pretrained init.path=DIR train=none compress=int4 --no-cache`, every stage
  and its perplexities, the RSS of its process tree sampled per compile stage

Peak RSS is each process's own high-water mark (VmHWM, read by the process before it exits),
cross-checked with what `os.wait4` reports for it (ru_maxrss, its descendants included; the
only number for the whole compile). The parent stays small (stdlib only) because Linux carries
a parent's peak into a child's ru_maxrss across fork + exec. The parent also samples the
machine's MemAvailable while each stage runs: the machine is shared, and a stage whose
estimated need (the previous shape's bytes per parameter) exceeds what is available is
recorded as skipped, not run. Writes bench/results/stage-costs-<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import machine  # noqa: E402  (stdlib only)

GIB = 1024 ** 3
DEFAULT_SHAPES = ("smollm2-135m", "qwen2.5-0.5b")
STAGES = ("checkpoint", "export", "optimize", "compress-int8", "compress-int4", "perplexity")
COMPILES = ("compile-int4", "compile-int8", "compile-none")
"""Whole compiles, by their `compress=` option."""
NEEDS = {"export": "checkpoint", "optimize": "export", "compress-int8": "optimize", "compress-int4": "optimize",
         "perplexity": "export", **{c: "checkpoint" for c in COMPILES}}
"""The stage whose output each stage reads."""
PATHS = {"compile-int4": ("export", "optimize", "compress-int4", "perplexity"),
         "compile-int8": ("export", "optimize", "compress-int8", "perplexity"),
         "compile-none": ("export", "optimize", "perplexity")}
"""The stages each whole compile runs (what its row is compared with)."""


# -- the child: one stage in this fresh process ---------------------------------


def _vm_hwm_bytes() -> int | None:
    """This process's own peak RSS (VmHWM), or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _set_threads(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, round(time.perf_counter() - start, 2)


def stage_checkpoint(spec: dict) -> dict:
    """transformers builds the published architecture (random weights) and saves it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = spec["config"]
    values = {k: v for k, v in config.items() if k not in ("model_type", "architectures", "auto_map")}
    hf_config = AutoConfig.for_model(config["model_type"], **values)
    hf_config.architectures = config["architectures"]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf_config)
    parameters = sum(p.numel() for p in model.parameters())
    folder = Path(spec["checkpoint"])
    model.save_pretrained(str(folder))
    write_byte_tokenizer(folder, config)
    weights = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    return {"parameters": int(parameters), "safetensors_bytes": weights}


def write_byte_tokenizer(folder: Path, config: dict) -> None:
    """A byte-level BPE (256 bytes, no merges) + an end-of-text token, so `slmc compile` has a
    tokenizer to reuse. The published tokenizers are not downloaded (no network); this one's
    ids all lie below the published vocabulary, which is all the compile needs of it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "model_max_length": 4096,
    }))


def stage_export(spec: dict) -> dict:
    from slmc.export import check_parity, export_decoder
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    exported, export_s = _timed(export_decoder, Path(spec["checkpoint"]), Path(spec["work"]) / "export")
    parity, parity_s = _timed(check_parity, Path(spec["checkpoint"]), exported.onnx_path)
    Path(spec["work"], "export-model.json").write_text(json.dumps(exported.model))
    return {"export_s": export_s, "parity_s": parity_s, "exporter": exported.exporter, "nodes": exported.node_count,
            "parity_ok": parity.ok, "parity": {k: float(v) for k, v in parity.cases.items()},
            "greedy_identical": parity.greedy_identical, "onnx_bytes": _onnx_bytes(exported.onnx_path)}


def stage_optimize(spec: dict) -> dict:
    from slmc.export.optimize import optimize_for_ort
    from slmc.stages.deploy import quiet_onnxruntime_tools

    quiet_onnxruntime_tools()
    model = json.loads(Path(spec["work"], "export-model.json").read_text())
    out = Path(spec["work"]) / "optimize" / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = optimize_for_ort(Path(spec["work"]) / "export" / "model.onnx", out, num_heads=model["num_attention_heads"],
                              hidden_size=model["hidden_size"], model_info=model)
    return {"nodes_before": report.nodes_before, "nodes_after": report.nodes_after,
            "max_abs_logit_diff": report.max_abs_logit_diff, "onnx_bytes": _onnx_bytes(out)}


def stage_compress(spec: dict, precision: str) -> dict:
    from slmc.export.quantize import quantize
    from slmc.stages.deploy import quiet_onnxruntime_tools

    quiet_onnxruntime_tools()
    out = Path(spec["work"]) / f"compress-{precision}" / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = quantize(Path(spec["work"]) / "optimize" / "model.onnx", out, precision=precision, target="ort",
                      block_size=32)
    return {"format": report.format, "bytes_before": report.bytes_before, "bytes_after": report.bytes_after}


def stage_perplexity(spec: dict) -> dict:
    import numpy as np

    from slmc.export import onnx_perplexity
    from slmc.stages.deploy import EVAL_WINDOW, HELDOUT_EVAL_TOKENS

    vocab = spec["config"]["vocab_size"]
    tokens = np.random.default_rng(0).integers(0, vocab, HELDOUT_EVAL_TOKENS)
    ppl = onnx_perplexity(Path(spec["work"]) / "export" / "model.onnx", tokens, window=EVAL_WINDOW)
    return {"heldout_ppl": ppl, "tokens": HELDOUT_EVAL_TOKENS, "window": EVAL_WINDOW,
            "note": "random token ids on random weights: the value only shows the graph ran"}


def _onnx_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).parent.iterdir() if p.name.startswith(Path(path).name))


CHILD_STAGES = {
    "checkpoint": stage_checkpoint, "export": stage_export, "optimize": stage_optimize,
    "compress-int8": lambda spec: stage_compress(spec, "int8"),
    "compress-int4": lambda spec: stage_compress(spec, "int4"),
    "perplexity": stage_perplexity,
}


def child_main(stage: str, spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    _set_threads(spec["threads"])
    started = time.perf_counter()
    try:
        import torch

        torch.set_num_threads(spec["threads"])
        result = {"ok": True, **CHILD_STAGES[stage](spec)}
    except Exception as exc:  # noqa: BLE001 - recorded in the results; the run goes on
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000],
                  "traceback": traceback.format_exc().strip().splitlines()[-12:]}
    result["work_s"] = round(time.perf_counter() - started, 2)
    result["vm_hwm_bytes"] = _vm_hwm_bytes()
    Path(spec["result_path"]).write_text(json.dumps(result))
    return 0 if result["ok"] else 1


# -- the parent: runs the children, watches memory, writes the results ----------


def mem_available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class MemoryWatch:
    """Watches one process tree while it runs, every `every_s` seconds.

    Records the lowest MemAvailable of the machine (other engineers share it), the largest
    RSS summed over the tree (psutil; pages shared between processes count once per process),
    and that peak per compile stage, read from the `stage NAME:` lines of the log. When
    MemAvailable falls below `floor` the tree is stopped (SIGKILL to its process group) before
    the kernel's OOM killer picks a process of someone else: the stage is recorded as stopped.
    """

    STAGE_LINE = re.compile(r"^stage (\w+):", re.MULTILINE)

    def __init__(self, pid: int, log: Path, floor: int, every_s: float = 0.5):
        self.pid, self.log, self.floor, self.every_s = pid, log, floor, every_s
        self.lowest = mem_available_bytes()
        self.tree_peak, self.stage, self.stage_peaks = 0, None, {}
        self.stopped_at: int | None = None
        self._read = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree_rss(self) -> int:
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _follow_log(self) -> None:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                f.seek(self._read)
                text = f.read()
                self._read = f.tell()
        except OSError:
            return
        names = self.STAGE_LINE.findall(text)
        if names:
            self.stage = names[-1]

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            now = mem_available_bytes()
            if now is not None and (self.lowest is None or now < self.lowest):
                self.lowest = now
            self._follow_log()
            rss = self._tree_rss()
            self.tree_peak = max(self.tree_peak, rss)
            if self.stage:
                self.stage_peaks[self.stage] = max(self.stage_peaks.get(self.stage, 0), rss)
            if now is not None and now < self.floor and self.stopped_at is None:
                self.stopped_at = now
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except OSError:
                    pass

    def __enter__(self) -> "MemoryWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_process(cmd: list[str], log: Path, floor: int, env: dict | None = None) -> dict:
    """Run `cmd` in its own process group, wait for it with wait4 (its own rusage, descendants
    included), and return rc, wall time, ru_maxrss and what the MemoryWatch saw."""
    log.parent.mkdir(parents=True, exist_ok=True)
    available = mem_available_bytes()
    load = machine.loadavg()
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        with MemoryWatch(proc.pid, log, floor) as watch:
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    row = {"rc": proc.returncode, "wall_s": round(wall, 2), "ru_maxrss_bytes": usage.ru_maxrss * 1024,
           "tree_rss_peak_bytes": watch.tree_peak, "mem_available_before_bytes": available,
           "mem_available_lowest_bytes": watch.lowest, "loadavg_before": load, "loadavg_after": machine.loadavg(),
           "log": str(log)}
    if watch.stage_peaks:
        row["stage_tree_rss_peak_bytes"] = watch.stage_peaks
    if watch.stopped_at is not None:
        row["stopped"] = (f"stopped by the bench: MemAvailable fell to {watch.stopped_at / GIB:.1f} GiB "
                          f"(floor {floor / GIB:.1f} GiB) with the stage's processes at "
                          f"{watch.tree_peak / GIB:.1f} GiB RSS")
    return row


def run_stage(stage: str, spec: dict, work: Path, floor: int) -> dict:
    spec = {**spec, "result_path": str(work / f"{stage}.result.json")}
    spec_path = work / f"{stage}.spec.json"
    spec_path.write_text(json.dumps(spec))
    Path(spec["result_path"]).unlink(missing_ok=True)
    proc = run_process([sys.executable, str(Path(__file__).resolve()), "--stage", stage, str(spec_path)],
                       work / "logs" / f"{stage}.log", floor)
    result_file = Path(spec["result_path"])
    if result_file.is_file():
        result = json.loads(result_file.read_text())
    else:
        result = {"ok": False, "error": f"no result: {_why(proc)}; see {proc['log']}"}
    return {"stage": stage, **result, **proc, "peak_rss_bytes": result.get("vm_hwm_bytes") or proc["ru_maxrss_bytes"]}


def _why(proc: dict) -> str:
    if proc.get("stopped"):
        return proc["stopped"]
    if proc["rc"] == -signal.SIGKILL:
        return "killed by SIGKILL (the kernel's OOM killer, most likely)"
    return f"exit {proc['rc']}"


def run_compile(stage: str, checkpoint: Path, work: Path, threads: int, floor: int) -> dict:
    """One whole `slmc compile` of the checkpoint (train=none, compress= the stage's), its stage times from the manifest."""
    compress = stage.removeprefix("compile-")
    out_dir = work / stage
    shutil.rmtree(out_dir, ignore_errors=True)
    slmc = Path(sys.executable).parent / "slmc"
    cmd = [str(slmc) if slmc.exists() else sys.executable, *([] if slmc.exists() else ["-m", "slmc.cli"]),
           "compile", "init=pretrained", f"init.path={checkpoint}", "train=none", f"compress={compress}",
           f"out_dir={out_dir}", "--no-cache"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "NO_COLOR": "1",
           "COLUMNS": "200"}
    proc = run_process(cmd, work / "logs" / f"{stage}.log", floor, env=env)
    row = {"stage": stage, "command": "slmc " + " ".join(cmd[1:]), "ok": proc["rc"] == 0, **proc,
           "peak_rss_bytes": max(proc["ru_maxrss_bytes"], proc["tree_rss_peak_bytes"]),
           "stage_seconds": _stage_seconds(out_dir)}
    if not row["ok"]:
        row["error"] = f"{_why(proc)}; see {proc['log']}"
    return row


def _stage_seconds(out_dir: Path) -> dict:
    """Per-stage seconds of the compile, from its bundle's manifest."""
    for manifest in sorted(out_dir.glob("**/bundle/manifest.json")):
        data = json.loads(manifest.read_text())
        return (data.get("metrics") or {}).get("stage_seconds") or {}
    return {}


def _estimate(previous: dict | None, shape: dict, stage: str) -> int | None:
    """Bytes `stage` should need for this shape, from the previous shape's measured peak.

    A stage scales with the parameters; the whole compile scales with this shape's own
    worst stage on its path (already measured), by the previous shape's ratio of the two.
    """
    if not previous or not previous.get("parameters") or not shape.get("parameters"):
        return None
    row = previous["stages"].get(stage)
    if not row or not row.get("ok") or not row.get("peak_rss_bytes"):
        return None
    if stage in PATHS:
        before, now = _worst(previous, PATHS[stage]), _worst(shape, PATHS[stage])
        if before and now:
            return int(row["peak_rss_bytes"] / before * now)
    return int(row["peak_rss_bytes"] / previous["parameters"] * shape["parameters"])


def _worst(shape: dict, stages: tuple[str, ...]) -> int | None:
    peaks = [shape["stages"][s]["peak_rss_bytes"] for s in stages if shape["stages"].get(s, {}).get("ok")]
    return max(peaks) if len(peaks) == len(stages) else None


def _skip(stage: str, need: int | None, floor: int) -> dict | None:
    """A skipped row when the estimate does not fit what the machine has free above the floor."""
    available = mem_available_bytes()
    if need is None or available is None or need <= available - floor:
        return None
    return {"stage": stage, "ok": False, "skipped": True, "mem_available_before_bytes": available,
            "loadavg_before": machine.loadavg(),
            "error": f"skipped: needs about {need / GIB:.1f} GiB (scaled from the previous shape), "
                     f"{available / GIB:.1f} GiB available on the shared machine (floor {floor / GIB:.1f} GiB)"}


def run_shape(shape: dict, work: Path, threads: int, previous: dict | None, stages: list[str], floor: int) -> dict:
    """Run `stages` for `shape` (rows of stages not run are kept as they are)."""
    name, config = shape["name"], shape["config"]
    work.mkdir(parents=True, exist_ok=True)
    spec = {"config": config, "checkpoint": str(work / "checkpoint"), "work": str(work), "threads": threads}
    print(f"[{name}] {config['num_hidden_layers']} layers, hidden {config['hidden_size']}, vocab {config['vocab_size']}",
          flush=True)
    for stage in stages:
        source = shape["stages"].get(NEEDS.get(stage), {"ok": True})
        if not source.get("ok"):
            row = {"stage": stage, "ok": False, "skipped": True, "error": f"skipped: {NEEDS[stage]} did not complete"}
        elif stage in COMPILES:
            row = (_skip(stage, _estimate(previous, shape, stage), floor)
                   or run_compile(stage, work / "checkpoint", work, threads, floor))
        else:
            row = _skip(stage, _estimate(previous, shape, stage), floor) or run_stage(stage, spec, work, floor)
        if shape["stages"].get(stage, {}).get("ok"):  # a rerun (--merge) keeps the earlier measurement beside it
            shape.setdefault("earlier", {}).setdefault(stage, []).append(shape["stages"][stage])
        shape["stages"][stage] = row
        if stage == "checkpoint" and row.get("ok"):
            shape["parameters"] = row["parameters"]
        _print_row(name, row)
    return shape


def _print_row(name: str, row: dict) -> None:
    if row.get("ok"):
        print(f"[{name}] {row['stage']:<14} peak {row['peak_rss_bytes'] / GIB:6.2f} GiB  {row['wall_s']:8.1f} s", flush=True)
    else:
        print(f"[{name}] {row['stage']:<14} {row.get('error', 'failed')}", flush=True)


def _gib(v: int | None) -> str:
    return "–" if v is None else f"{v / GIB:.2f}"


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"# Stage costs at real size — {result['date']}", "",
        f"Machine: {m['cpu']}, {m['cpus_available']} CPUs available, {m['memory_gib']} GiB, no swap, {m['os']}; "
        f"torch {m['packages'].get('torch')}, transformers {m['packages'].get('transformers')}, "
        f"onnxruntime {m['packages'].get('onnxruntime')}. Threads per stage: {result['threads']}. "
        "The machine is shared with other engineers; the runs that made this file:", "",
    ]
    for run in result["runs"]:
        lines.append(f"- {run['started']}: {', '.join(run['stages'])} of {', '.join(run['shapes'])}; load average "
                     f"{run['loadavg_start']} at the start, {run['loadavg_end']} at the end; MemAvailable "
                     f"{_gib(run['mem_available_start_bytes'])} GiB at the start")
    lines += [
        "", "Checkpoints: the published config.json of each model (`slmc.families.published`)"
        + (f" cut to {result['layers_cut']} layers" if result.get("layers_cut") else " at full depth")
        + ", built by transformers (`AutoConfig.for_model` + `AutoModelForCausalLM.from_config`) with "
        "**random weights** (seed 0) and written with `save_pretrained` (safetensors, fp32). Each stage ran in "
        "a fresh process calling the library functions the compile's stages call; peak RSS is that process's "
        "VmHWM. A compile-<compress> row is one whole `slmc compile init=pretrained init.path=DIR train=none "
        "compress=<compress> --no-cache`: its peak is the larger of `wait4`'s ru_maxrss (its largest process) and "
        "the RSS of its process tree sampled every 0.5 s. `bench/stage_costs.py` wrote this file.", "",
    ]
    for shape in result["shapes"]:
        params = shape["parameters"]
        lines += [f"## {shape['name']} ({params / 1e6:.1f}M parameters, fp32 {params * 4 / GIB:.2f} GiB)"
                  if params else f"## {shape['name']}", "",
                  "| stage | peak RSS GiB | ÷ fp32 weights | wall s | lowest MemAvailable GiB | load before | notes |",
                  "|---|---:|---:|---:|---:|---|---|"]
        for stage, row in shape["stages"].items():
            peak = row.get("peak_rss_bytes") if row.get("ok") else None
            ratio = f"{peak / (params * 4):.2f}" if peak and params else "–"
            wall = f"{row['wall_s']:.1f}" if row.get("ok") else "–"
            earlier = "".join(f"; an earlier run: {_gib(e['peak_rss_bytes'])} GiB, {e['wall_s']:.0f} s at load "
                              f"{e.get('loadavg_before')}" for e in shape.get("earlier", {}).get(stage, []))
            lines.append(f"| {stage} | {_gib(peak)} | {ratio} | {wall} | {_gib(row.get('mem_available_lowest_bytes'))} "
                         f"| {row.get('loadavg_before', '–')} | {_notes(row)}{earlier} |")
        for compile_stage in COMPILES:
            compile_row = shape["stages"].get(compile_stage) or {}
            if not (compile_row.get("stage_seconds") or compile_row.get("stage_tree_rss_peak_bytes")):
                continue
            seconds, peaks = compile_row.get("stage_seconds") or {}, compile_row.get("stage_tree_rss_peak_bytes") or {}
            lines += ["", f"Inside {compile_stage} (seconds from the manifest; RSS of the process tree, sampled):", "",
                      "| compile stage | s | RSS peak GiB |", "|---|---:|---:|"]
            for name in dict.fromkeys([*seconds, *peaks]):
                lines.append(f"| {name} | {seconds.get(name, '–')} | {_gib(peaks.get(name))} |")
            worst = _worst(shape, PATHS[compile_stage])
            if worst and compile_row.get("ok"):
                lines += ["", f"The whole compile peaks at {compile_row['peak_rss_bytes'] / worst:.2f} × the worst of "
                          f"its stages run alone ({', '.join(PATHS[compile_stage])}): one process runs them all."]
        lines.append("")
    lines += ["`÷ fp32 weights` = peak RSS ÷ (parameters × 4 bytes). The rule `memory.fits_compile_host` "
              "(compiler/rules/memory.py) fits its arithmetic to these rows.", ""]
    return "\n".join(lines)


def _notes(row: dict) -> str:
    if not row.get("ok"):
        return str(row.get("error", "failed")).replace("|", "/")[:300]
    keys = {"checkpoint": ("safetensors_bytes",), "export": ("export_s", "parity_s", "exporter", "parity_ok"),
            "optimize": ("nodes_before", "nodes_after", "max_abs_logit_diff"),
            "compress-int8": ("bytes_after",), "compress-int4": ("bytes_after",), "perplexity": ("heldout_ppl",),
            **{c: ("ru_maxrss_bytes", "tree_rss_peak_bytes") for c in COMPILES}}
    parts = []
    for key in keys.get(row["stage"], ()):
        value = row.get(key)
        if isinstance(value, float):
            value = f"{value:.3g}"
        if key.endswith("_bytes") and isinstance(row.get(key), int):
            value = f"{row[key] / 1e6:.0f} MB" if row[key] < GIB else f"{row[key] / GIB:.2f} GiB"
        if value not in (None, {}):
            parts.append(f"{key} {value}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", nargs=2, metavar=("STAGE", "SPEC"), help=argparse.SUPPRESS)
    parser.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES), help="names in slmc.families.published")
    parser.add_argument("--stages", nargs="+", choices=[*STAGES, *COMPILES],
                        help="only these stages (their inputs must be in --work from an earlier run; with --merge)")
    parser.add_argument("--layers", type=int, help="cut every shape to this depth (a quick check of the plumbing)")
    parser.add_argument("--threads", type=int, default=2, help="torch / OpenMP threads per stage (default 2)")
    parser.add_argument("--skip-compile", action="store_true", help="leave out the whole `slmc compile` (compile-int4) per shape")
    parser.add_argument("--floor-gib", type=float, default=1.5,
                        help="stop a stage when the machine's MemAvailable falls below this (default 1.5)")
    parser.add_argument("--merge", action="store_true",
                        help="update today's results file: the stages run now replace their rows, the others stay")
    parser.add_argument("--work", default=str(ROOT / "bench" / ".work" / "stage-costs"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    if args.stage:
        return child_main(*args.stage)

    from slmc.families.published import PUBLISHED

    unknown = [s for s in args.shapes if s not in PUBLISHED]
    if unknown:
        parser.error(f"unknown shape(s) {unknown}; known: {', '.join(PUBLISHED)}")
    stages = args.stages or [*STAGES, *(() if args.skip_compile else ("compile-int4",))]
    date = dt.date.today().isoformat()
    out = Path(args.out)
    stem = f"stage-costs-{date}" + (f"-layers{args.layers}" if args.layers else "")
    if args.merge and (out / f"{stem}.json").is_file():
        result = json.loads((out / f"{stem}.json").read_text())
    elif args.stages:
        parser.error("--stages needs --merge and today's results file (the other rows and the inputs come from it)")
    else:
        result = {"date": date, "threads": args.threads, "weights": "random (transformers from_config, seed 0)",
                  "layers_cut": args.layers, "shapes": [], "runs": []}
    result["machine"] = machine.describe()
    run = {"started": dt.datetime.now().isoformat(timespec="seconds"), "shapes": args.shapes, "stages": stages,
           "loadavg_start": machine.loadavg(), "mem_available_start_bytes": mem_available_bytes()}
    shapes = {s["name"]: s for s in result["shapes"]}
    previous = None
    for name in args.shapes:
        config = dict(PUBLISHED[name])
        if args.layers:
            config["num_hidden_layers"] = args.layers
            if "max_window_layers" in config:
                config["max_window_layers"] = args.layers
        shape = shapes.setdefault(name, {"name": name, "config": config, "stages": {}, "parameters": None})
        run_shape(shape, Path(args.work) / name, args.threads, previous, stages, int(args.floor_gib * GIB))
        previous = shape
    result["shapes"] = list(shapes.values())
    run["loadavg_end"] = machine.loadavg()
    result["runs"].append(run)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))
    print(f"wrote {out / stem}.json and .md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
