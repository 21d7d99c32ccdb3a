"""The regression gate's verdict: side-by-side measurements against the tolerances in `targets`.

Pure functions over the measurement (`slmc.runtime.compare.measure_pair`) and the task
results: the rows of the table both the console and report.md show, and what failed. A
tolerance left at null is reported, never judged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..estimate import fmt_bytes


@dataclass(frozen=True)
class Tolerances:
    max_ppl_increase: float | None = None
    max_accuracy_drop: float | None = None
    min_speed_ratio: float | None = None
    max_size_ratio: float | None = None

    @classmethod
    def from_targets(cls, targets: Any) -> Tolerances:
        return cls(**{name: getattr(targets, name, None) for name in cls.__dataclass_fields__})


def _ratio(candidate: float | None, baseline: float | None) -> float | None:
    if candidate is None or baseline is None or baseline == 0:
        return None
    return candidate / baseline


def _row(metric: str, base, cand, shown: str, change: str, limit: str, failed: bool | None) -> dict[str, Any]:
    verdict = "—" if failed is None else ("FAIL" if failed else "ok")
    return {"metric": metric, "baseline": base, "candidate": cand, "shown": shown, "change": change,
            "tolerance": limit, "verdict": verdict}


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:,.3f}{unit}" if isinstance(value, float) else f"{value:,}{unit}"


def gate_rows(measured: dict[str, Any], tol: Tolerances, accuracy: dict[str, float | None] | None = None,
              comparable: bool = True) -> list[dict[str, Any]]:
    """One row per measured quantity: both values, the change, the tolerance and the verdict."""
    b, c = measured["baseline"], measured["candidate"]
    rows = []
    if comparable:
        ratio = _ratio(c["perplexity"], b["perplexity"])
        failed = None if tol.max_ppl_increase is None or ratio is None else ratio - 1 > tol.max_ppl_increase + 1e-12
        rows.append(_row("held-out perplexity", b["perplexity"], c["perplexity"],
                         f"{_fmt(b['perplexity'])} → {_fmt(c['perplexity'])}",
                         "—" if ratio is None else f"{ratio - 1:+.2%}",
                         "—" if tol.max_ppl_increase is None else f"≤ {tol.max_ppl_increase:+.2%}", failed))
    if accuracy is not None:
        base_acc, cand_acc = accuracy.get("baseline"), accuracy.get("candidate")
        drop = None if base_acc is None or cand_acc is None else base_acc - cand_acc
        failed = None if tol.max_accuracy_drop is None or drop is None else drop > tol.max_accuracy_drop + 1e-12
        rows.append(_row("task accuracy", base_acc, cand_acc, f"{_fmt(base_acc)} → {_fmt(cand_acc)}",
                         "—" if drop is None else f"{-drop:+.3f}",
                         "—" if tol.max_accuracy_drop is None else f"drop ≤ {tol.max_accuracy_drop:.3f}", failed))
    speed = _ratio(c["decode_tokens_per_s"], b["decode_tokens_per_s"])
    failed = None if tol.min_speed_ratio is None or speed is None else speed < tol.min_speed_ratio
    rows.append(_row("decode tokens/s", b["decode_tokens_per_s"], c["decode_tokens_per_s"],
                     f"{_fmt(b['decode_tokens_per_s'])} → {_fmt(c['decode_tokens_per_s'])}",
                     "—" if speed is None else f"×{speed:.2f}",
                     "—" if tol.min_speed_ratio is None else f"≥ ×{tol.min_speed_ratio:g}", failed))
    prefill = _ratio(c["prefill_ms"], b["prefill_ms"])
    rows.append(_row("prefill ms", b["prefill_ms"], c["prefill_ms"],
                     f"{_fmt(b['prefill_ms'])} → {_fmt(c['prefill_ms'])}",
                     "—" if prefill is None else f"×{prefill:.2f}", "—", None))
    memory = _ratio(c["peak_memory_mb"], b["peak_memory_mb"])
    rows.append(_row("peak memory MiB", b["peak_memory_mb"], c["peak_memory_mb"],
                     f"{_fmt(b['peak_memory_mb'])} → {_fmt(c['peak_memory_mb'])}",
                     "—" if memory is None else f"×{memory:.2f}", "—", None))
    size = _ratio(c["bytes"], b["bytes"])
    failed = None if tol.max_size_ratio is None or size is None else size > tol.max_size_ratio
    rows.append(_row("bundle size", b["bytes"], c["bytes"], f"{fmt_bytes(b['bytes'])} → {fmt_bytes(c['bytes'])}",
                     "—" if size is None else f"×{size:.2f}",
                     "—" if tol.max_size_ratio is None else f"≤ ×{tol.max_size_ratio:g}", failed))
    return rows


def failures(rows: list[dict[str, Any]]) -> list[str]:
    """One line per exceeded tolerance: what, both values, the change and the limit."""
    return [f"{r['metric']}: {r['shown']} ({r['change']}), tolerance {r['tolerance']}"
            for r in rows if r["verdict"] == "FAIL"]


def table_text(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (the console prints the same text report.md holds)."""
    lines = ["| metric | baseline → candidate | change | tolerance | verdict |", "|---|---:|---:|---:|---|"]
    lines += [f"| {r['metric']} | {r['shown']} | {r['change']} | {r['tolerance']} | {r['verdict']} |" for r in rows]
    return "\n".join(lines)
