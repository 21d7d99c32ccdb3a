"""The per-run report: report.md (stages, held-out perplexity, the shipped graph against the
checkpoint, export parity, bundle, rule warnings) and loss.png, computed from the run folder
and the typed results of `execute`.

Each stage's key figure and held-out evaluations come from its result type (stages.results),
the decode bound from the latency rule's own estimate; templates/report.md.j2 only places
values. A partial run (plan only, train.kind=none, a failed stage) renders what it has
and says what is missing. `write_run_report(run_dir)` regenerates the report of a
finished run from its folder alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import SlmcError
from .estimate import fmt_bytes
from .layout import LAYOUT
from .stages.base import EVAL_WINDOW, Results
from .runtime.manifest import parity_blocks
from .stages.registry import COMPRESS, EXPORT, evaluation_labels
from .stages.results import DeployResult, compression, fmt_change, fmt_ppl

LOSS_PLOT = "loss.png"
PPL_LABELS = evaluation_labels()  # held-out perplexity keys with their labels, in lifecycle order

# -- reading the run folder ---------------------------------------------------


def read_json(path: Path) -> Any:
    """Parsed JSON, or None when the file is absent or unreadable (a partial run)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_config(run_dir: Path) -> dict:
    """The resolved config.yaml as plain data ({} when absent), without its provenance section
    (the checkpoints' folders and Hub commits: a record of the run, not a config key)."""
    try:
        data = yaml.safe_load((run_dir / LAYOUT.config).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    if not isinstance(data, dict):
        return {}
    data.pop("provenance", None)
    return data


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
    for key in reversed(PPL_LABELS):
        if heldout.get(key) is not None:
            return key, heldout[key]
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
    """Rule latency.meets_target's estimate for the deployed architecture: the checkpoint's
    config.json, else (a model built from scratch or distilled) the model group.

    None when config.yaml does not validate against this version's schema (a run written by
    another version) or names no architecture: no bound rather than a wrong one.
    """
    from .estimate import Arch
    from .load import validate
    from .rules.latency import estimate_tps

    try:
        cfg = validate(config)
    except SlmcError:
        return None
    hf = read_json(run_dir / LAYOUT.final_checkpoint / "config.json")
    try:
        if isinstance(hf, dict):
            arch = Arch.from_hf_config(hf)
        elif cfg.init.kind in ("scratch", "distill"):
            arch = Arch.from_model(cfg.model)
        else:
            return None  # the checkpoint's architecture is not known until it is trained
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    bandwidth = cfg.device.memory_bandwidth_gbps
    tps, weights, kv_total = estimate_tps(cfg, arch, cfg.compress.precision, bandwidth)
    # estimate_tps reads the KV cache at the average context: half of export.max_seq_len
    return Bound(tps, weights, kv_total, bandwidth, max(1, cfg.export.max_seq_len // 2))


# -- formatting ---------------------------------------------------------------


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


# -- stages -----------------------------------------------------------------------


def stage_rows(plan: dict, results: Results, manifest: dict | None) -> list[dict]:
    """One row per planned stage: status, seconds, key figure (the result's own)."""
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
            status = "cached" if result.cached else "ran"
            seconds = fmt_seconds(result.seconds)
            seconds = f"({seconds})" if result.cached else seconds
            figure = result.figure()
        rows.append({"name": name, "status": status, "seconds": seconds, "figure": figure})  # report.md.j2 escapes it (md)
    return rows


# -- sections -------------------------------------------------------------------


def heldout_perplexity(results: Results, manifest: dict | None) -> dict[str, float]:
    """Perplexity per stage on the one held-out evaluation set, in lifecycle order."""
    found = {e.key: e.ppl for e in results.evaluations()}
    for key, value in (_g(manifest, "metrics", "heldout_perplexity", default={}) or {}).items():
        found.setdefault(key, value)
    return {k: found[k] for k in PPL_LABELS if found.get(k) is not None}


def perplexity_rows(heldout: dict[str, float], precision: str) -> list[dict]:
    base = heldout.get("checkpoint")
    return [{"stage": PPL_LABELS[k].format(precision=precision), "ppl": fmt_ppl(v),
             "change": fmt_change(v / base) if base and k != "checkpoint" else ""}
            for k, v in heldout.items()]


def shipped_summary(shipped: dict | None) -> dict | None:
    """The shipped graph's measurement against the fp32 checkpoint (manifest metrics.parity), in words."""
    if not shipped:
        return None
    greedy = shipped.get("greedy", {})
    firsts = greedy.get("first_divergence") or []
    diff = shipped.get("max_abs_logit_diff")
    return {
        "graph": f"{shipped.get('stage', '?')} ({shipped.get('precision', '?')}), run by slmc.runtime on "
                 f"{shipped.get('execution_provider', '?')}",
        "reference": shipped.get("reference", "?"),
        "greedy": (f"{greedy.get('agree', '?')} of {greedy.get('tokens', '?')} identical up to each prompt's "
                   f"first divergence ({greedy.get('prompts', '?')} held-out prompts); first divergence per prompt: "
                   + (", ".join("none" if i is None else f"token {i}" for i in firsts) or "—")),
        "top1": "—" if shipped.get("top1_agreement") is None else f"{shipped['top1_agreement']:.1%}",
        "diff": "not finite" if diff is None else f"{diff:.2e}",
        "ppl": fmt_ppl(shipped.get("heldout_perplexity")),
        # judged when the manifest is written (export.parity_tolerance); a stage's own block has no verdict yet
        "exact": None if "ok" not in shipped else ("yes" if shipped["ok"] else "no"),
        "tolerance": shipped.get("tolerance"),
        "note": shipped.get("note"),
    }


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


def header(config: dict, manifest: dict | None, plan: dict | None = None) -> dict:
    """Run name, device, runtime, precision and model: from the manifest, else the config (and for a
    loaded checkpoint, its family as plan.json's provenance records it: the `model` group is unused)."""
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
            "model": f"{_planned_model(config, plan)} (not built yet)", "config_sha256": None}


def lineage_summary(plan: dict | None, manifest: dict | None) -> dict | None:
    """The bundle's version and what the run started from (plan.json's lineage record); the
    manifest's version wins, being what the bundle's consumers see. None for a plan without one."""
    from .lineage_show import describe_init

    record = _g(plan, "provenance", "lineage")
    if not isinstance(record, dict):
        return None
    started = describe_init(record.get("init"))
    parent = record.get("parent")
    if isinstance(parent, dict) and parent.get("version"):
        started += f" (its bundle v{parent['version']})"
    return {"version": (manifest or {}).get("version") or record.get("version") or "?", "started": started}


def _planned_model(config: dict, plan: dict | None) -> str:
    checkpoint = _g(plan, "provenance", "checkpoints", "init.path")
    if _g(config, "init", "kind") in ("pretrained", "prune") and isinstance(checkpoint, dict):
        return f"{checkpoint.get('family') or '?'} checkpoint {checkpoint.get('source', '?')}"
    return str(_g(config, "model", "name", default="?"))


def task_summary(results: Results, manifest: dict | None) -> dict | None:
    """Task accuracy (eval.tasks) of the checkpoint and the bundle, one row per task, and the mean."""
    package = results.get("package")
    tasks = getattr(package, "tasks", None) or _g(manifest, "metrics", "tasks")
    if not tasks:
        return None
    checkpoint, bundle = tasks["checkpoint"], tasks["bundle"]

    def pct(value):
        return "—" if value is None else f"{value:.1%}"

    def change(before, after):
        return "—" if before is None or after is None else f"{(after - before) * 100:+.1f} points"

    rows = [{"task": name, "metric": t["metric"], "n": t["n"], "checkpoint": pct(checkpoint["tasks"][name]["accuracy"]),
             "bundle": pct(t["accuracy"]), "change": change(checkpoint["tasks"][name]["accuracy"], t["accuracy"]),
             "norm": (f"{pct(checkpoint['tasks'][name].get('acc_norm'))} / {pct(t.get('acc_norm'))}"
                      if "acc_norm" in t else "—")}
            for name, t in bundle["tasks"].items()]
    gate = tasks.get("max_accuracy_drop")
    return {"rows": rows, "checkpoint": pct(checkpoint["accuracy"]), "bundle": pct(bundle["accuracy"]),
            "change": change(checkpoint["accuracy"], bundle["accuracy"]), "precision": tasks.get("precision", "?"),
            "chat": bundle.get("chat", False), "gate": None if gate is None else f"{gate * 100:g} points"}


def _state(results: Results, manifest: dict | None, metrics: list[dict]) -> str:
    if manifest is not None:
        return "complete"
    return "plan only" if not results and not metrics else "partial"


def run_context(run_dir: Path, results: Results) -> tuple[dict, bytes | None]:
    """Everything report.md.j2 places, and the loss plot's PNG (None without training losses)."""
    plan, config, metrics = read_json(run_dir / LAYOUT.plan) or {}, read_config(run_dir), read_metrics(run_dir)
    # A bundle on disk belongs to this report only if this execution packaged it (or nothing ran now).
    manifest = read_json(run_dir / LAYOUT.bundle / "manifest.json") if not results or "package" in results else None
    name = plan.get("run_name") or run_dir.name
    head = header(config, manifest, plan)
    heldout = heldout_perplexity(results, manifest)
    export, compress = results.get(EXPORT), results.get(COMPRESS)
    shipped, export_parity = parity_blocks(manifest) if manifest else (None, None)
    # Without a bundle, the latest deploy stage's measurement, if it was made at the bundle's precision
    # (an optimize result reused from an fp32 compile by an int4 one that stopped is not what ships).
    deployed = [r.shipped for r in results.values() if isinstance(r, DeployResult)]
    if not shipped and deployed and deployed[-1] and deployed[-1].get("precision") == head["precision"]:
        shipped = deployed[-1]
    parity = (export.parity if export else None) or export_parity
    files = bundle_files(run_dir, manifest) if manifest else {}
    compressed = _g(manifest, "metrics", "compress") or (compress.report if compress else None)
    bound = decode_bound(run_dir, config) if config else None
    plot = loss_plot(metrics, name)
    context = {
        "name": name, "head": head, "state": _state(results, manifest, metrics),
        "lineage": lineage_summary(plan, manifest),
        "bound": bound.describe() if bound else None,
        "stages": stage_rows(plan, results, manifest),
        "seconds_ran": fmt_seconds(results.seconds_ran()) if results else None,
        "any_cached": any(r.cached for r in results.values()),
        "ppl_rows": perplexity_rows(heldout, head["precision"]),
        "eval_tokens": _count((export.heldout_eval_tokens if export else None)
                              or _g(manifest, "metrics", "heldout_eval_tokens")),
        "eval_window": min(EVAL_WINDOW, _g(config, "export", "max_seq_len", default=EVAL_WINDOW)),
        "shipped": shipped_summary(shipped), "old_bundle": bool(manifest) and not shipped,
        "tasks": task_summary(results, manifest),
        "parity_rows": parity_rows(parity), "parity_tolerance": _g(parity, "tolerance"),
        "greedy_identical": _g(parity, "greedy_identical"),
        "bundle_rows": [{"name": n, "size": fmt_bytes(b), "bytes": f"{b:,}"} for n, b in files.items()],
        "bundle_total": f"{fmt_bytes(sum(files.values()))} ({sum(files.values()):,} bytes)" if files else None,
        "compress": compression(compressed) if compressed else None,
        "training": training_summary(metrics), "train_kind": _g(config, "train", "kind", default="?"),
        "plot": LOSS_PLOT if plot else None,
        "gate": gate_summary(manifest),
        "rules_checked": len(plan.get("rules_checked", [])),
        "warnings": [{"rule": w.get("rule", "?"), "paths": ", ".join(w.get("paths", [])),
                      "message": w.get("message", ""), "fix": w.get("fix", "")} for w in plan.get("warnings", [])],
    }
    return context, plot


def gate_summary(manifest: dict | None) -> dict | None:
    """The regression gate's table (manifest metrics.regression_gate), None when no gate ran."""
    gate = _g(manifest, "metrics", "regression_gate")
    if not gate:
        return None
    settings = _g(gate, "measured", "settings", default={})
    return {"baseline": gate.get("baseline", "?"), "passed": gate.get("passed"), "rows": gate.get("rows", []),
            "failures": gate.get("failures", []), "note": gate.get("note"), "settings": settings}


def write_run_report(run_dir: Path, results: Results | None = None) -> Path:
    """Write report.md (and loss.png when there are training losses) into the run folder.

    Without results (`slmc report RUN`), the report is rebuilt from the run folder alone.
    """
    from . import writer
    from .render import render_template

    run_dir = Path(run_dir)
    context, plot = run_context(run_dir, results if isinstance(results, Results) else Results())
    files: dict[str, str | bytes] = {LAYOUT.report: render_template("report.md.j2", context)}
    if plot is not None:
        files[LOSS_PLOT] = plot
    writer.write_files(run_dir, files)
    return run_dir / LAYOUT.report
