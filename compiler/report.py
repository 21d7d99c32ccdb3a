"""The per-run report: report.md (stages, held-out perplexity, parity, bundle, rule
warnings) and loss.png, computed from the run folder and the results of `execute`.

Every value is computed and formatted here; templates/report.md.j2 only places
them. A partial run (plan only, train.kind=none, a failed stage) renders what it
has and says what is missing. `write_run_report(run_dir, {})` regenerates the
report of a finished run from its folder alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .estimate import fmt_bytes
from .layout import LAYOUT

LOSS_PLOT = "loss.png"
PPL_LABELS = {  # held-out perplexity keys, in lifecycle order
    "prune_before": "source model (before pruning)",
    "prune_after": "pruned model (before training)",
    "checkpoint": "checkpoint (PyTorch, after training)",
    "export": "export (ONNX, fp32)",
    "optimize": "optimize (fused ONNX Runtime graph)",
    "compress": "compress ({precision})",
}

# -- reading the run folder ---------------------------------------------------


def read_json(path: Path) -> Any:
    """Parsed JSON, or None when the file is absent or unreadable (a partial run)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_config(run_dir: Path) -> dict:
    """The resolved config.yaml as plain data ({} when absent)."""
    try:
        data = yaml.safe_load((run_dir / LAYOUT.config).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl records by step; after a resume the last record of a step wins."""
    try:
        lines = (run_dir / LAYOUT.metrics).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    by_step: dict[int, dict] = {}
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a killed run
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            by_step[record["step"]] = record
    return [by_step[s] for s in sorted(by_step)]


def bundle_files(run_dir: Path, manifest: dict) -> dict[str, int]:
    """Sizes of the bundle's hashed files (what the package stage counts as the bundle)."""
    folder = run_dir / LAYOUT.bundle
    return {name: (folder / name).stat().st_size for name in sorted(manifest.get("hashes", {}))
            if (folder / name).is_file()}


def last_ppl(heldout: dict) -> tuple[str, float] | None:
    """(stage, perplexity) of the last stage that measured it: the model that ships."""
    for stage in ("compress", "optimize", "export", "checkpoint"):
        if heldout.get(stage) is not None:
            return stage, heldout[stage]
    return None


@dataclass(frozen=True)
class Bound:
    """The device's bandwidth-bound decode speed (rule latency.meets_target's estimate)."""

    tokens_per_s: float
    weight_bytes: float
    kv_bytes: int
    bandwidth_gbps: float
    context: int

    def describe(self) -> str:
        return (f"≈{self.tokens_per_s:,.0f} tok/s at batch 1 ({fmt_bytes(self.weight_bytes)} of weights + "
                f"{fmt_bytes(self.kv_bytes)} of KV cache at {self.context} tokens read per token, "
                f"at {self.bandwidth_gbps:g} GB/s)")


def decode_bound(run_dir: Path, config: dict) -> Bound | None:
    """The bound for the deployed architecture (the checkpoint's config.json, else the model group).

    Works on config.yaml as plain data, so runs written by another slmc version still get
    a bound; the arithmetic is rule latency.meets_target's (estimate_tps): context at half
    of export.max_seq_len, fp32 KV bindings on TensorRT, the precision's KV dtype on ORT.
    """
    from .estimate import Arch, decode_tokens_per_s, kv_dtype_bytes

    hf = read_json(run_dir / LAYOUT.final_checkpoint / "config.json")
    model = config.get("model") or {}
    if not isinstance(hf, dict) and _g(config, "init", "kind") in ("scratch", "distill"):
        hf = {**model, "model_type": model.get("family")}
    try:
        arch = Arch.from_hf_config(hf)
        precision, compress = config["compress"]["precision"], config["compress"]
        bandwidth = float(config["device"]["memory_bandwidth_gbps"])
        context = max(1, int(config["export"]["max_seq_len"]) // 2)
        kv = 4 if _g(config, "runtime", "name") == "tensorrt" else kv_dtype_bytes(precision)
        tps, weights, kv_total = decode_tokens_per_s(arch, precision, bandwidth, context, kv_bytes=kv,
                                                     block_size=_estimate_block_size(config),
                                                     symmetric=compress.get("symmetric", True))
    except (KeyError, TypeError, ValueError):
        return None  # no architecture or an incomplete config: no bound rather than a wrong one
    return Bound(tps, weights, kv_total, bandwidth, context)


def _estimate_block_size(config: dict) -> int:
    """compress.block_size, or for auto the smallest device candidate (as the rules estimate)."""
    block = _g(config, "compress", "block_size")
    if isinstance(block, int):
        return block
    return min(_g(config, "device", "int4_block_sizes") or [32])


# -- formatting ---------------------------------------------------------------


def fmt_ppl(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.1f}" if value >= 1000 else f"{value:.3f}"


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def fmt_seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def _g(mapping: Any, *keys: str, default: Any = None) -> Any:
    """mapping[k1][k2]... or default when any level is missing."""
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return default
        mapping = mapping[key]
    return mapping


# -- stage figures --------------------------------------------------------------


def _train_figure(r: dict) -> str:
    if r.get("first_loss") is None:
        return "no training steps"
    text = f"loss {r['first_loss']:.3f} → {r['last_loss']:.3f}"
    return text + (f"; eval perplexity {fmt_ppl(r['final_eval_ppl'])}" if r.get("final_eval_ppl") else "")


def compression(rep: dict) -> str:
    """What compress did to the model file; a TensorRT builder flag leaves the ONNX as it is."""
    before, after, fmt = rep.get("bytes_before", 0), rep.get("bytes_after", 0), rep.get("format", "?")
    if fmt == "builder-flag":
        return f"TensorRT builder flag: the ONNX model stays {fmt_bytes(after)}; the engine built on the device casts it"
    return f"{fmt}: model {fmt_bytes(before)} → {fmt_bytes(after)} (×{before / max(after, 1):.2f} smaller)"


def _compress_figure(r: dict) -> str:
    text = compression(r.get("report", {}))
    if r.get("report", {}).get("block_size"):
        text += f", block {r['report']['block_size']}"
    trials = r.get("block_size_trials") or []
    if trials:  # block_size=auto: what each candidate cost, so the choice can be checked
        tried = ", ".join(f"{t['block_size']}: {fmt_ppl(t['heldout_ppl'])}" for t in trials)
        text += f" (auto; perplexity by block {tried})"
    return text + (f"; perplexity {fmt_change(1 + r['ppl_increase'])}" if r.get("ppl_increase") is not None else "")


def _optimize_figure(r: dict) -> str:
    rep = r.get("report", {})
    fused = ", ".join(f"{op} ×{n}" for op, n in sorted(rep.get("transformer_fusions", {}).items()) if n)
    return f"{rep.get('nodes_before', '?')} → {rep.get('nodes_after', '?')} nodes" + (f"; fused {fused}" if fused else "")


STAGE_FIGURES = {
    "data": lambda r: f"{r.get('train_chars', 0):,} training / {r.get('heldout_chars', 0):,} held-out characters",
    "tokenizer": lambda r: f"vocabulary {r.get('vocab_size', 0):,}; {r.get('source', '?')}",
    "prune": lambda r: f"{r.get('params_before', 0):,} → {r.get('params_after', 0):,} parameters ({r.get('arch', '')})",
    "train": _train_figure,
    "export": lambda r: (f"{r.get('nodes', '?')} nodes, opset {r.get('opset', '?')} ({r.get('exporter', '?')}); "
                         f"parity {'ok' if _g(r, 'parity', 'ok') else 'FAILED'}"),
    "prepare_tensorrt": lambda r: (f"{_g(r, 'report', 'nodes_before', default='?')} → "
                                   f"{_g(r, 'report', 'nodes_after', default='?')} nodes, parser op check passed"),
    "compress": _compress_figure,
    "optimize": _optimize_figure,
    "package": lambda r: f"bundle {fmt_bytes(r.get('bytes', 0))} in {len(r.get('files', {}))} file(s)",
}


def stage_rows(plan: dict, results: dict, manifest: dict | None) -> list[dict]:
    """One row per planned stage: status, seconds, key figure."""
    earlier = _g(manifest, "metrics", "stage_seconds", default={}) if not results else {}
    rows = []
    for stage in plan.get("stages", []):
        name, result = stage["name"], results.get(stage["name"])
        if stage.get("runs_on") == "target":
            status, seconds, figure = "on the device", "—", stage.get("description", "")
        elif result is None:
            ran_before = name in earlier or (name == "package" and manifest is not None)
            status, seconds, figure = ("ran (earlier)" if ran_before else "not run"), fmt_seconds(earlier.get(name)), ""
        else:
            status = "cached" if result.get("cached") else "ran"
            seconds = fmt_seconds(result.get("seconds"))
            seconds = f"({seconds})" if result.get("cached") else seconds
            figure = STAGE_FIGURES.get(name, lambda r: "")(result)
        rows.append({"name": name, "status": status, "seconds": seconds, "figure": figure})  # report.md.j2 escapes it (md)
    return rows


def ran_seconds(results: dict) -> float:
    return sum(r.get("seconds") or 0.0 for r in results.values() if not r.get("cached"))


# -- sections -------------------------------------------------------------------


def heldout_perplexity(results: dict, manifest: dict | None) -> dict[str, float]:
    """Perplexity per stage on the one held-out evaluation set, in lifecycle order."""
    found: dict[str, float] = {}
    if "prune" in results:
        found["prune_before"] = results["prune"].get("heldout_ppl_before")
        found["prune_after"] = results["prune"].get("heldout_ppl_after")
    if "export" in results:
        found["checkpoint"] = results["export"].get("checkpoint_ppl")
        found["export"] = results["export"].get("heldout_ppl")
    if "optimize" in results:
        found["optimize"] = results["optimize"].get("heldout_ppl")
    if "compress" in results:
        found["compress"] = results["compress"].get("heldout_ppl")
    for key, value in (_g(manifest, "metrics", "heldout_perplexity", default={}) or {}).items():
        found.setdefault(key, value)
    return {k: found[k] for k in PPL_LABELS if found.get(k) is not None}


def fmt_change(ratio: float) -> str:
    """A relative change as +1.23% (a change below 0.005% prints as +0.00%, never -0.00%)."""
    change = round(ratio - 1.0, 4)
    return f"{change if change else 0.0:+.2%}"


def perplexity_rows(heldout: dict[str, float], precision: str) -> list[dict]:
    base = heldout.get("checkpoint")
    return [{"stage": PPL_LABELS[k].format(precision=precision), "ppl": fmt_ppl(v),
             "change": fmt_change(v / base) if base and k != "checkpoint" else ""}
            for k, v in heldout.items()]


def parity_rows(parity: dict | None) -> list[dict]:
    if not parity:
        return []
    tolerance = parity.get("tolerance")
    return [{"case": name, "diff": f"{diff:.2e}",
             "ok": "yes" if tolerance is None or diff <= tolerance else "NO"}
            for name, diff in sorted(parity.get("cases", {}).items())]


def training_summary(metrics: list[dict]) -> dict | None:
    losses = [m for m in metrics if m.get("loss") is not None]
    evals = [m for m in metrics if m.get("eval_ppl") is not None]
    if not losses and not evals:
        return None
    speeds = sorted(m["tokens_per_s"] for m in losses if m.get("tokens_per_s"))
    return {
        "steps": losses[-1]["step"] if losses else 0,
        "loss": f"{losses[0]['loss']:.4f} → {losses[-1]['loss']:.4f}" if losses else "—",
        "eval": f"{fmt_ppl(evals[0]['eval_ppl'])} (step {evals[0]['step']}) → "
                f"{fmt_ppl(evals[-1]['eval_ppl'])} (step {evals[-1]['step']})" if evals else "—",
        "tokens_per_s": f"{speeds[len(speeds) // 2]:,.0f}" if speeds else "—",
        "elapsed": fmt_seconds(max((m.get("elapsed") or 0.0) for m in metrics)),
    }


def loss_plot(metrics: list[dict], title: str) -> bytes | None:
    """loss.png when the run logged training losses (train.kind=none logs none)."""
    from .plots import loss_curve

    losses = [m for m in metrics if m.get("loss") is not None]
    if not losses:
        return None
    evals = [m for m in metrics if m.get("eval_ppl") is not None]
    return loss_curve([m["step"] for m in losses], [m["loss"] for m in losses],
                      [m["step"] for m in evals], [m["eval_ppl"] for m in evals], title)


def header(config: dict, manifest: dict | None) -> dict:
    """Run name, device, runtime, precision and model: from the manifest, else the config."""
    device, runtime = config.get("device", {}), config.get("runtime", {})
    if manifest:
        d, r, m = manifest["device"], manifest["runtime"], manifest.get("model", {})
        return {"device": f"{d['name']} ({d.get('isa', '?')}, {d.get('arch', '?')})",
                "runtime": f"{r['name']} {r.get('version', '')} ({r.get('execution_provider', '?')})",
                "precision": manifest.get("precision", "?"),
                "model": (f"{m.get('architecture', '?')}, {m.get('parameters', 0):,} parameters "
                          f"({m.get('num_hidden_layers', '?')} layers, hidden {m.get('hidden_size', '?')})"),
                "config_sha256": _g(manifest, "provenance", "config_sha256", default="?")}
    ep = device.get("ort_execution_provider") if runtime.get("name") == "ort" else "TensorRT"
    return {"device": f"{device.get('name', '?')} ({device.get('isa', '?')}, {device.get('arch', '?')})",
            "runtime": f"{runtime.get('name', '?')} ({ep})",
            "precision": _g(config, "compress", "precision", default="?"),
            "model": f"{_g(config, 'model', 'name', default='?')} (not built yet)", "config_sha256": None}


def _state(results: dict, manifest: dict | None, metrics: list[dict]) -> str:
    if manifest is not None:
        return "complete"
    return "plan only" if not results and not metrics else "partial"


def run_context(run_dir: Path, results: dict) -> tuple[dict, bytes | None]:
    """Everything report.md.j2 places, and the loss plot's PNG (None without training losses)."""
    from .stages.deploy import EVAL_WINDOW

    plan, config, metrics = read_json(run_dir / LAYOUT.plan) or {}, read_config(run_dir), read_metrics(run_dir)
    # A bundle on disk belongs to this report only if this execution packaged it (or nothing ran now).
    manifest = read_json(run_dir / LAYOUT.bundle / "manifest.json") if not results or "package" in results else None
    name = plan.get("run_name") or run_dir.name
    head = header(config, manifest)
    heldout = heldout_perplexity(results, manifest)
    parity = _g(results, "export", "parity") or _g(manifest, "metrics", "parity")
    files = bundle_files(run_dir, manifest) if manifest else {}
    compress = _g(manifest, "metrics", "compress") or _g(results, "compress", "report")
    bound = decode_bound(run_dir, config) if config else None
    plot = loss_plot(metrics, name)
    context = {
        "name": name, "head": head, "state": _state(results, manifest, metrics),
        "bound": bound.describe() if bound else None,
        "stages": stage_rows(plan, results, manifest), "seconds_ran": fmt_seconds(ran_seconds(results)) if results else None,
        "any_cached": any(r.get("cached") for r in results.values()),
        "ppl_rows": perplexity_rows(heldout, head["precision"]),
        "eval_tokens": _count(_g(results, "export", "heldout_eval_tokens")
                              or _g(manifest, "metrics", "heldout_eval_tokens")),
        "eval_window": min(EVAL_WINDOW, _g(config, "export", "max_seq_len", default=EVAL_WINDOW)),
        "parity_rows": parity_rows(parity), "parity_tolerance": _g(parity, "tolerance"),
        "greedy_identical": _g(parity, "greedy_identical"),
        "bundle_rows": [{"name": n, "size": fmt_bytes(b), "bytes": f"{b:,}"} for n, b in files.items()],
        "bundle_total": f"{fmt_bytes(sum(files.values()))} ({sum(files.values()):,} bytes)" if files else None,
        "compress": compression(compress) if compress else None,
        "training": training_summary(metrics), "train_kind": _g(config, "train", "kind", default="?"),
        "plot": LOSS_PLOT if plot else None,
        "rules_checked": len(plan.get("rules_checked", [])),
        "warnings": [{"rule": w.get("rule", "?"), "paths": ", ".join(w.get("paths", [])),
                      "message": w.get("message", ""), "fix": w.get("fix", "")} for w in plan.get("warnings", [])],
    }
    return context, plot


def write_run_report(run_dir: Path, results: dict) -> Path:
    """Write report.md (and loss.png when there are training losses) into the run folder."""
    from . import writer
    from .render import render_template

    run_dir = Path(run_dir)
    context, plot = run_context(run_dir, results or {})
    files: dict[str, str | bytes] = {LAYOUT.report: render_template("report.md.j2", context)}
    if plot is not None:
        files[LOSS_PLOT] = plot
    writer.write_files(run_dir, files)
    return run_dir / LAYOUT.report
