"""The text form of `slmc diff` (the JSON form is `diff.diff`'s result as it is)."""

from __future__ import annotations

import json
from typing import Any

from ..estimate import fmt_bytes
from .gate import table_text

MAX_VALUE = 60


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _pairs(title: str, rows: list[dict[str, Any]], extra: str = "") -> list[str]:
    if not rows:
        return []
    lines = [f"{title} ({len(rows)}){extra}:"]
    for r in rows:
        change = f"  ({r['change']})" if r.get("change") else ""
        lines.append(f"  {r['path']}: {_value(r['a'])} -> {_value(r['b'])}{change}")
    return lines


def render_text(result: dict[str, Any]) -> str:
    lines = [f"A: {result['a']}", f"B: {result['b']}"]
    if not result["config_compared"]:
        lines.append("config: not compared (a side has no run folder with config.yaml)")
    lines += _pairs("config", result["config"])
    lines += _pairs("architecture, precision, runtime (manifest)", result["manifest"])
    files = result["files"]
    if files["added"] or files["removed"] or files["changed"]:
        lines.append(f"files, by sha256 of the {files['compared']}:")
        for label in ("added", "removed", "changed"):
            for name in files[label]:
                lines.append(f"  {label:<8} {name}")
    size = result["size"]
    if size["a"] != size["b"]:
        ratio = f" (×{size['ratio']:.2f})" if size["ratio"] else ""
        lines.append(f"size: {fmt_bytes(size['a'])} -> {fmt_bytes(size['b'])}{ratio}")
    content = [r for r in result["metrics"] if r["content"]]
    timing = [r for r in result["metrics"] if not r["content"]]
    lines += _pairs("metrics", content)
    lines += _pairs("timings", timing, " (not content)")
    for side in ("a", "b"):
        gate = result["gate"][side]
        if gate is not None:
            verdict = "passed" if gate["passed"] else "FAILED: " + "; ".join(gate["failures"] or [])
            lines.append(f"{side.upper()}'s regression gate against {gate['baseline']}: {verdict}")
    lines += _pairs("provenance", result["provenance"], " (not content)")
    measured = result.get("measured")
    if measured:
        s = measured["settings"]
        lines.append(f"measured here, side by side (A -> B; {s['repeats']} interleaved runs of {s['prompt_tokens']} "
                     f"prompt + {s['new_tokens']} new tokens, medians; memory: {s['memory']}):")
        if not measured["comparable"]:
            lines.append("  perplexity not compared: the tokenizer.json files differ")
        lines.append(table_text(measured["rows"]))
    lines.append("identical in content" if result["identical"] else "different")
    return "\n".join(lines)
