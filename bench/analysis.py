"""The arithmetic of the report: medians over runs, slmc/peer ratios, the bandwidth bound, targets.

Pure functions over plain dicts, so tests can feed them fake measurements.

Bandwidth bound: a decode step must read every weight once (shared by the rows of a
batch) and each row's KV cache, so at best
    tokens/s = batch * bandwidth / (weight_bytes + batch * kv_bytes_per_row)
with the KV cache taken at the average decode context (prompt + new_tokens / 2).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

# Each peer system and the slmc bundle it is compared with (same weight precision).
PEERS = {
    "torch-eager fp32": "slmc fp32",
    "ort-genai fp32": "slmc fp32",
    "ort-genai int4": "slmc int4",
    "ort-genai int4, slmc's block": "slmc int4",
    "optimum fp32": "slmc fp32",
}


def summarize(values: Iterable[float]) -> dict:
    """Median, min, max and count of the values (None entries dropped)."""
    kept = [v for v in values if v is not None]
    if not kept:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(kept), "min": min(kept), "max": max(kept), "n": len(kept)}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def paired_ratio(ours: list[float], theirs: list[float]) -> float | None:
    """Median of run-by-run ratios (run i of each system ran in the same round)."""
    pairs = [a / b for a, b in zip(ours, theirs) if a is not None and b]
    return statistics.median(pairs) if pairs else None


def kv_bytes_per_row(layers: int, kv_heads: int, head_dim: int, context: float, dtype_bytes: int = 4) -> float:
    """Bytes of K and V a decode step reads for one row at this context length."""
    return 2 * layers * kv_heads * head_dim * context * dtype_bytes


def average_context(prompt_tokens: int, new_tokens: int) -> float:
    """Mean context length over the decode steps (prompt + 1 ... prompt + new - 1)."""
    return prompt_tokens + new_tokens / 2


def bound_tokens_per_s(bandwidth_gbps: float, weight_bytes: int, kv_row_bytes: float, batch: int) -> float:
    """Upper bound on decode tokens/s when every step is limited by memory reads."""
    return batch * bandwidth_gbps * 1e9 / (weight_bytes + batch * kv_row_bytes)


def cell_rows(measurements: dict[str, list[dict]]) -> dict[str, dict]:
    """Per system of one (model, batch) cell: summaries of prefill, decode and peak RSS."""
    rows = {}
    for system, samples in measurements.items():
        ok = [s for s in samples if s.get("ok")]
        runs = [r for s in ok for r in s["runs"]]
        rows[system] = {
            "prefill_ms": summarize(r["prefill_ms"] for r in runs),
            "decode_tokens_per_s": summarize(r["decode_tokens_per_s"] for r in runs),
            "peak_rss_mb": summarize(s.get("peak_rss_mb") for s in ok),
            "decode_series": [r["decode_tokens_per_s"] for r in runs],
            "errors": sorted({s["error"] for s in samples if not s.get("ok")}),
            "first_tokens": next((s["info"]["first_tokens"] for s in ok
                                  if s.get("info", {}).get("first_tokens")), None),
        }
        threading = sorted({f"{t['threads']}t spin {'on' if t['spinning'] else 'off'}"
                            for s in ok if (t := s.get("info", {}).get("threading"))})
        if threading:  # slmc's own choice (a defaults condition) or the count it was given
            rows[system]["threading"] = threading
        fractions = [r["session_fraction"] for r in runs if "session_fraction" in r]
        if fractions:
            rows[system]["session_fraction"] = summarize(fractions)
    return rows


def add_ratios(rows: dict[str, dict]) -> None:
    """Give each peer row slmc/peer ratios for decode (higher is better for slmc) and prefill."""
    for peer, ours in PEERS.items():
        if peer not in rows or ours not in rows:
            continue
        peer_row, our_row = rows[peer], rows[ours]
        peer_row["compared_with"] = ours
        peer_row["decode_ratio"] = ratio(our_row["decode_tokens_per_s"]["median"],
                                         peer_row["decode_tokens_per_s"]["median"])
        peer_row["decode_ratio_paired"] = paired_ratio(our_row["decode_series"], peer_row["decode_series"])
        peer_row["prefill_speedup"] = ratio(peer_row["prefill_ms"]["median"], our_row["prefill_ms"]["median"])


def common_prefix(a: list[int] | None, b: list[int] | None) -> int | None:
    """How many leading tokens two greedy continuations share (None if either is missing)."""
    if a is None or b is None:
        return None
    count = 0
    for x, y in zip(a, b):
        if x != y:
            break
        count += 1
    return count


def add_agreement(rows: dict[str, dict], reference: str = "torch-eager fp32") -> None:
    """Leading greedy tokens (row 0) each system shares with the reference: same weights, same argmax."""
    ref = rows.get(reference, {}).get("first_tokens")
    for row in rows.values():
        row["tokens_agree_with_reference"] = common_prefix(row.get("first_tokens"), ref)


def add_bounds(rows: dict[str, dict], weight_bytes: dict[str, int], kv_row_bytes: float,
               bandwidth_gbps: float, batch: int) -> None:
    """Give each row its bandwidth bound and the % of it that the measured decode reached."""
    for system, row in rows.items():
        weights = weight_bytes.get(system)
        if not weights:
            continue
        bound = bound_tokens_per_s(bandwidth_gbps, weights, kv_row_bytes, batch)
        row["weight_bytes"], row["bound_tokens_per_s"] = weights, bound
        measured = row["decode_tokens_per_s"]["median"]
        row["percent_of_bound"] = 100 * measured / bound if measured is not None else None


def _decode(rows: dict, system: str) -> float | None:
    row = rows.get(system)
    return row["decode_tokens_per_s"]["median"] if row else None


def _target(name: str, value: float | None, threshold: float, higher_is_better: bool = True, unit: str = "x") -> dict:
    met = None if value is None else (value >= threshold if higher_is_better else value < threshold)
    return {"target": name, "value": value, "threshold": threshold, "unit": unit,
            "comparison": ">=" if higher_is_better else "<", "met": met}


REAL_SHAPES = ("smollm2-135m", "qwen2.5-0.5b")
"""Issue 13's real sizes (bench/prepare.REAL_SHAPES; stdlib-only here, so named again)."""


def condition_targets(conditions: dict[str, dict[str, dict]]) -> list[dict]:
    """Issue 13's targets per measured condition, batch 1: at a fixed thread count slmc int4 >= 1.1x
    and fp32 >= 1.0x ORT GenAI on the real shapes; with a busy process, every system at its
    defaults, slmc >= 1.0x ORT GenAI (int4 and fp32, every model); defaults idle: information.
    conditions: model -> condition label -> batch -> rows."""
    targets = []
    for model, by_condition in conditions.items():
        for label, cells in by_condition.items():
            rows = cells.get(1) or cells.get("1") or {}
            if not rows:
                continue
            for precision, goal in (("int4", 1.1), ("fp32", 1.0)):
                value = ratio(_decode(rows, f"slmc {precision}"), _decode(rows, f"ort-genai {precision}"))
                name = f"{model} b1 {label}: slmc {precision} / ORT GenAI {precision} decode"
                if label.endswith("busy"):
                    targets.append(_target(name, value, 1.0))
                elif label.startswith("defaults"):
                    targets.append({**_target(name + " (information)", value, 1.0), "met": None,
                                    "comparison": "", "threshold": None})
                elif model in REAL_SHAPES:
                    targets.append(_target(name, value, goal))
    return targets


def evaluate_targets(cells: dict[str, dict[int, dict]], compile_costs: dict | None,
                     conditions: dict[str, dict[str, dict]] | None = None) -> list[dict]:
    """The issue's targets against the medians. cells: model -> batch -> rows; None value: not measured.
    conditions (model -> label -> batch -> rows) adds issue 13's per-condition targets."""
    targets = condition_targets(conditions or {})
    for model in [m for m in ("tiny", "small") if m in cells or not conditions]:
        rows = cells.get(model, {}).get(1, {})
        targets.append(_target(f"{model} b1: slmc int4 / ORT GenAI int4 decode",
                               ratio(_decode(rows, "slmc int4"), _decode(rows, "ort-genai int4")), 1.1))
        same = ratio(_decode(rows, "slmc int4"), _decode(rows, "ort-genai int4, slmc's block"))
        if same is not None:  # not a target: how much of the int4 ratio is the block size
            targets.append({**_target(f"{model} b1: slmc int4 / ORT GenAI int4 at slmc's block size (information)",
                                      same, 1.1), "met": None, "comparison": "", "threshold": None})
        targets.append(_target(f"{model} b1: slmc fp32 / ORT GenAI fp32 decode",
                               ratio(_decode(rows, "slmc fp32"), _decode(rows, "ort-genai fp32")), 1.1))
    if "small" in cells or not conditions:
        rows = cells.get("small", {}).get(1, {})
        targets.append(_target("small b1: slmc int4 / PyTorch eager decode",
                               ratio(_decode(rows, "slmc int4"), _decode(rows, "torch-eager fp32")), 5.0))
    costs = compile_costs or {}
    check = costs.get("check", {}).get("median_s")
    targets.append(_target("slmc check, cold process (median)", check, 0.5, higher_is_better=False, unit="s"))
    sweep = costs.get("sweep", {}).get("sweep_vs_one_compile")
    targets.append(_target("6-point compress x device sweep / one full compile", sweep, 2.0,
                           higher_is_better=False))
    return targets
