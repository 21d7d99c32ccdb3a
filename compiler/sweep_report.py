"""`slmc report <sweep dir>`: one table and two Pareto panels over a sweep's bundles.

For every run folder with bundle/manifest.json it collects device, precision,
runtime, bundle size, the shipped model's held-out perplexity, the decode speed
measured on this machine (slmc.runtime.bench) and the device's bandwidth bound,
so a reader sees both "measured here" and "bound on the device". TensorRT
bundles are not benchmarked here: their engine is built on the device.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import SlmcError
from .estimate import fmt_bytes
from .layout import LAYOUT
from .report import decode_bound, fmt_ppl, last_ppl, read_config, read_json

SWEEP_REPORT = "sweep_report.md"
PARETO_PLOT = "pareto.png"
PROMPT_TOKENS = NEW_TOKENS = 64
FRONTS = ("size", "bound", "here")  # size vs ppl; bound tok/s vs ppl; measured tok/s vs ppl
FRONT_NAMES = {"size": "size", "bound": "speed on the device", "here": "speed here"}


@dataclass(frozen=True)
class SweepRun:
    """One bundle of the sweep, as the table and the plot show it (None: not available)."""

    name: str
    path: str                  # run folder, relative to the sweep folder
    device: str
    precision: str
    runtime: str
    bundle_bytes: int
    ppl: float | None
    ppl_stage: str | None
    bound_tps: float | None
    measured_tps: float | None
    measured_note: str         # why there is no measured figure, or how it was measured
    has_report: bool

    @property
    def label(self) -> str:
        return f"{self.device}/{self.precision}"


def find_runs(sweep_dir: Path) -> list[Path]:
    """Run folders under sweep_dir holding a published bundle (hidden folders such as the
    stage cache and half-written `.bundle.*` stagings are skipped)."""
    found = []
    for manifest in sorted(sweep_dir.rglob("manifest.json")):
        rel = manifest.relative_to(sweep_dir)
        if rel.parent.name == LAYOUT.bundle and not any(part.startswith(".") for part in rel.parts):
            found.append(manifest.parent.parent)
    return found


def measure_decode(bundle: Path, manifest: dict, runs: int) -> tuple[float | None, str]:
    """Median decode tokens/s on this machine at batch 1, and a note; TensorRT needs its device."""
    if manifest["runtime"]["name"] == "tensorrt":
        return None, "needs device (TensorRT engine is built there)"
    from slmc.runtime.bench import bench
    from slmc.runtime.errors import SlmcRuntimeError

    context = int(manifest.get("limits", {}).get("max_seq_len", PROMPT_TOKENS + NEW_TOKENS))
    prompt = max(1, min(PROMPT_TOKENS, context // 2))
    new = max(2, min(NEW_TOKENS, context - prompt))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "provider not available; running on CPU": noted below instead
            result = bench(bundle, prompt_tokens=prompt, new_tokens=new, runs=runs, allow_foreign=True)
    except SlmcRuntimeError as exc:
        return None, f"failed: {exc.render()}"
    wanted = manifest["runtime"].get("execution_provider")
    note = f"on {result['provider']}" if wanted and result["provider"] != wanted else ""
    return result["decode_tokens_per_s"], note


def collect(run_dir: Path, sweep_dir: Path, *, measure: bool, runs: int) -> SweepRun:
    manifest = read_json(run_dir / LAYOUT.bundle / "manifest.json")
    if not isinstance(manifest, dict) or not {"runtime", "device"} <= manifest.keys():
        raise SlmcError(f"{run_dir / LAYOUT.bundle / 'manifest.json'} is not an slmc bundle manifest",
                        where=str(run_dir), fix="recompile that run, or move it out of the sweep folder")
    shipped = last_ppl(manifest.get("metrics", {}).get("heldout_perplexity", {}))
    bound = decode_bound(run_dir, read_config(run_dir))
    tps, note = measure_decode(run_dir / LAYOUT.bundle, manifest, runs) if measure else (None, "not measured")
    folder = run_dir / LAYOUT.bundle
    size = sum((folder / n).stat().st_size for n in manifest.get("hashes", {}) if (folder / n).is_file())
    return SweepRun(
        name=run_dir.name, path=run_dir.relative_to(sweep_dir).as_posix(), device=manifest["device"]["name"],
        precision=manifest.get("precision", "?"), runtime=manifest["runtime"]["name"], bundle_bytes=size,
        ppl=shipped[1] if shipped else None, ppl_stage=shipped[0] if shipped else None,
        bound_tps=bound.tokens_per_s if bound else None, measured_tps=tps, measured_note=note,
        has_report=(run_dir / LAYOUT.report).is_file(),
    )


def pareto_front(points: list[tuple[float | None, float | None]]) -> list[bool]:
    """Which points are Pareto-optimal when both coordinates are minimised.

    A point is on the front when no other point is at least as good on both and
    better on one; points with a missing coordinate are never on it.
    """
    def dominated(p, q) -> bool:
        return q[0] <= p[0] and q[1] <= p[1] and (q[0] < p[0] or q[1] < p[1])

    full = [p for p in points if None not in p]
    return [None not in p and not any(dominated(p, q) for q in full) for p in points]


def fronts(runs: list[SweepRun]) -> dict[str, list[bool]]:
    """The three fronts: smaller and better, faster (device bound) and better, faster here and better."""
    def neg(x: float | None) -> float | None:
        return None if x is None else -x

    return {
        "size": pareto_front([(r.bundle_bytes, r.ppl) for r in runs]),
        "bound": pareto_front([(neg(r.bound_tps), r.ppl) for r in runs]),
        "here": pareto_front([(neg(r.measured_tps), r.ppl) for r in runs]),
    }


def _unique_labels(runs: list[SweepRun]) -> list[str]:
    seen: dict[str, int] = {}
    labels = []
    for r in runs:
        seen[r.label] = seen.get(r.label, 0) + 1
        labels.append(r.label if seen[r.label] == 1 else f"{r.label} #{seen[r.label]}")
    return labels


def _tps(value: float | None, note: str = "") -> str:
    """A speed with its note ("1,234 (on CPUExecutionProvider)"), or the note alone when there is none."""
    if value is None:
        return note or "—"
    return f"{value:,.0f}" + (f" ({note})" if note else "")


def size_unit(largest: int) -> tuple[str, float]:
    """The decimal unit the plot's size axis uses (the one fmt_bytes gives the largest bundle)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if largest >= scale:
            return unit, scale
    return "B", 1.0


def sweep_context(sweep_dir: Path, runs: list[SweepRun], measure: bool, bench_runs: int) -> tuple[dict, list]:
    """The rows report.md.j2 places, and the plot's points (same order: device, then largest bundle first)."""
    from .plots import ParetoPoint

    runs = sorted(runs, key=lambda r: (r.device, -r.bundle_bytes, r.precision, r.name))
    on, labels = fronts(runs), _unique_labels(runs)
    unit, scale = size_unit(max(r.bundle_bytes for r in runs))
    rows, points = [], []
    for i, r in enumerate(runs):
        marks = [FRONT_NAMES[f] for f in FRONTS if on[f][i]]
        rows.append({
            "name": r.name, "link": f"{r.path}/{LAYOUT.report}" if r.has_report else None,
            "label": labels[i], "runtime": r.runtime, "size": fmt_bytes(r.bundle_bytes),
            "ppl": fmt_ppl(r.ppl) + (f" ({r.ppl_stage})" if r.ppl_stage else ""),
            "measured": _tps(r.measured_tps, r.measured_note), "bound": _tps(r.bound_tps),
            "pareto": ("★ " + ", ".join(marks)) if marks else "",
        })
        points.append(ParetoPoint(labels[i], r.bundle_bytes / scale, r.ppl, r.bound_tps, r.measured_tps,
                                  on["size"][i], on["bound"][i], on["here"][i]))
    context = {"sweep": sweep_dir.name, "count": len(runs), "rows": rows, "plot": PARETO_PLOT,
               "measure": measure, "bench_runs": bench_runs, "prompt_tokens": PROMPT_TOKENS,
               "new_tokens": NEW_TOKENS, "size_unit": unit,
               "front_counts": {FRONT_NAMES[f]: sum(on[f]) for f in FRONTS}}
    return context, points


def write_sweep_report(sweep_dir: Path, *, measure: bool = True, runs: int = 3) -> Path:
    """Write sweep_report.md and pareto.png into sweep_dir; returns the report's path."""
    from . import writer
    from .plots import pareto_panels
    from .render import render_template

    if not isinstance(runs, int) or runs < 1:
        raise SlmcError(f"runs must be an integer >= 1, got {runs!r}", where="report --runs")
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    found = find_runs(sweep_dir) if sweep_dir.is_dir() else []
    if not found:
        raise SlmcError(f"no run folder with {LAYOUT.bundle}/manifest.json under {sweep_dir}", where="report",
                        fix="point `slmc report` at the out_dir of a compiled sweep (slmc compile -m ... out_dir=DIR)")
    collected = [collect(run, sweep_dir, measure=measure, runs=runs) for run in found]
    context, points = sweep_context(sweep_dir, collected, measure, runs)
    files: dict[str, str | bytes] = {
        SWEEP_REPORT: render_template("sweep_report.md.j2", context),
        PARETO_PLOT: pareto_panels(points, f"{sweep_dir.name}: {len(points)} bundle(s)", context["size_unit"]),
    }
    writer.write_files(sweep_dir, files)
    return sweep_dir / SWEEP_REPORT
