"""The gate's verdict over measurements (compare.gate): each tolerance judged at its boundary, null ones never."""

from __future__ import annotations

import pytest

from slmc.compare.gate import Tolerances, failures, gate_rows, table_text


def _side(ppl=10.0, tps=100.0, prefill=5.0, mem=20.0, size=1000):
    return {"perplexity": ppl, "decode_tokens_per_s": tps, "prefill_ms": prefill, "peak_memory_mb": mem, "bytes": size}


def _verdicts(candidate: dict, tol: Tolerances, accuracy=None) -> dict[str, str]:
    rows = gate_rows({"baseline": _side(), "candidate": candidate}, tol, accuracy)
    return {r["metric"]: r["verdict"] for r in rows}


def test_no_tolerance_judges_nothing():
    verdicts = _verdicts(_side(ppl=100.0, tps=1.0, size=10**9), Tolerances())
    assert set(verdicts.values()) == {"—"}


@pytest.mark.parametrize("ppl, verdict", [(10.5, "ok"), (10.51, "FAIL"), (9.0, "ok")])
def test_perplexity_increase_is_relative(ppl, verdict):
    assert _verdicts(_side(ppl=ppl), Tolerances(max_ppl_increase=0.05))["held-out perplexity"] == verdict


@pytest.mark.parametrize("tps, verdict", [(95.0, "ok"), (94.9, "FAIL"), (300.0, "ok")])
def test_speed_ratio_is_candidate_over_baseline(tps, verdict):
    assert _verdicts(_side(tps=tps), Tolerances(min_speed_ratio=0.95))["decode tokens/s"] == verdict


@pytest.mark.parametrize("size, verdict", [(1000, "ok"), (1001, "FAIL")])
def test_size_ratio(size, verdict):
    assert _verdicts(_side(size=size), Tolerances(max_size_ratio=1.0))["bundle size"] == verdict


@pytest.mark.parametrize("cand, verdict", [(0.70, "ok"), (0.69, "FAIL")])
def test_accuracy_drop_is_in_absolute_points(cand, verdict):
    verdicts = _verdicts(_side(), Tolerances(max_accuracy_drop=0.05), {"baseline": 0.75, "candidate": cand})
    assert verdicts["task accuracy"] == verdict


def test_failures_name_the_metric_both_values_and_the_limit():
    rows = gate_rows({"baseline": _side(), "candidate": _side(ppl=12.0, tps=50.0)},
                     Tolerances(max_ppl_increase=0.05, min_speed_ratio=0.9))
    assert failures(rows) == ["held-out perplexity: 10.000 → 12.000 (+20.00%), tolerance ≤ +5.00%",
                              "decode tokens/s: 100.000 → 50.000 (×0.50), tolerance ≥ ×0.9"]
    table = table_text(rows)
    assert table.count("\n") == len(rows) + 1 and "| FAIL |" in table


def test_not_comparable_leaves_out_perplexity():
    rows = gate_rows({"baseline": _side(), "candidate": _side()}, Tolerances(max_ppl_increase=0.0), comparable=False)
    assert "held-out perplexity" not in {r["metric"] for r in rows}
