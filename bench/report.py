"""The markdown report of one results JSON: machine at the top, one table per model and batch,
ratios slmc/peer per row, the targets, compile costs and what the profile shows.

`python bench/report.py bench/results/<date>.json` prints it again from a saved result.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _num(value, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}{suffix}"


def _mib(value) -> str:
    return "–" if value is None else f"{value / 2**20:,.1f}"


def machine_section(result: dict) -> list[str]:
    meta, machine, bw = result["meta"], result["meta"]["machine"], result.get("bandwidth", {})
    settings = meta["settings"]
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v)
    return [
        f"# slmc benchmark — {meta['started'][:10]}",
        "",
        f"- machine: {machine['cpu']}, {machine['cpus_available']} CPUs available ({machine['logical_cpus']} logical), "
        f"{machine['memory_gib']} GiB, {machine['os']}, Python {machine['python']}",
        f"- load average (1/5/15 min): start {meta['loadavg_start']}, end {meta['loadavg_end']} "
        "(a shared machine: read ratios, not single times)",
        f"- memory bandwidth: {_num(bw.get('gbps'))} GB/s (numpy copy of {bw.get('array_mib')} MiB, best of "
        f"{bw.get('repeats')}; {bw.get('counting')}); runs: {bw.get('runs')}",
        f"- packages: {packages}",
        f"- settings: prompt {settings['prompt_tokens']} tokens, {settings['new_tokens']} new tokens (EOS ignored), "
        f"{_threads(settings)}, {settings['rounds']} rounds × 1 run per fresh process "
        f"after {settings['warmup']} warm-up run(s) of {settings.get('warmup_tokens', settings['new_tokens'])} "
        "tokens, systems alternated round by round; medians",
        f"- command: `{meta['command']}`",
        "",
    ]


def _threads(settings: dict) -> str:
    threads = settings["threads"]
    if not isinstance(threads, list):
        return f"{threads} intra-op threads everywhere"
    labels = [c["condition"] for c in settings.get("conditions", [])] or threads
    return ("conditions side by side in every round: " + "; ".join(map(str, labels)) + " (a thread count is given "
            "to every system; defaults: each system's own; busy: one CPU-bound process runs meanwhile)")


def cell_table(model: str, batch: int, rows: dict, model_info: dict, condition: str = "") -> list[str]:
    where = f", {condition}" if condition else ""
    lines = [f"## {model} ({model_info.get('parameters_m', '?')}M parameters, {model_info.get('weights_note', '')}), "
             f"batch {batch}{where}", "",
             "| system | prefill ms | decode tok/s (min–max) | peak RSS MiB | weights read/token MiB | bound tok/s "
             "| % of bound | slmc/peer decode | slmc/peer prefill |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        decode = row["decode_tokens_per_s"]
        if row.get("unavailable") or decode["median"] is None:
            reason = row.get("unavailable") or "; ".join(row.get("errors", [])) or "no result"
            lines.append(f"| {name} | unavailable: {reason[:160]} | | | | | | | |")
            continue
        spread = f"{_num(decode['median'])} ({_num(decode['min'], 0)}–{_num(decode['max'], 0)})"
        versus = f" vs {row['compared_with']}" if row.get("compared_with") else ""
        if row.get("threading"):
            name = f"{name} ({', '.join(row['threading'])})"
        lines.append(
            f"| {name} | {_num(row['prefill_ms']['median'])} | {spread} | {_num(row['peak_rss_mb']['median'])} "
            f"| {_mib(row.get('weight_bytes'))} | {_num(row.get('bound_tokens_per_s'), 0)} "
            f"| {_num(row.get('percent_of_bound'), 1, '%')} | {_num(row.get('decode_ratio'), 2, '×')}{versus} "
            f"| {_num(row.get('prefill_speedup'), 2, '×')} |")
    return lines + [""]


def targets_section(targets: list[dict]) -> list[str]:
    lines = ["## Targets", "", "| target | measured | goal | met |", "|---|---:|---:|:---:|"]
    for t in targets:
        if t["threshold"] is None:  # an informational row beside a target
            lines.append(f"| {t['target']} | {_num(t['value'], 2, ' ' + t['unit'])} | – | – |")
            continue
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {_num(t['value'], 2, ' ' + t['unit'])} | {t['comparison']} "
                     f"{t['threshold']} {t['unit']} | {met} |")
    return lines + [""]


def costs_section(costs: dict | None) -> list[str]:
    if not costs:
        return []
    lines = ["## Compiler costs", ""]
    check = costs.get("check", {})
    if "error" in check:
        lines.append(f"- slmc check: error: {check['error']}")
    elif check:
        imports = check["imports"]
        top = ", ".join(f"{i['module']} {i['ms']} ms" for i in imports["top_cumulative"][:10])
        lines += [f"- `slmc check`, cold: median {_num(check['median_s'], 2)} s over {len(check['seconds'])} "
                  f"fresh processes; torch imported: {'**yes**' if imports['torch_imported'] else 'no'}; "
                  f"heavy packages imported: {', '.join(imports['heavy_imported']) or 'none'}; "
                  f"total import time {imports['total_import_ms']} ms",
                  f"- top imports by cumulative time: {top}"]
    plan = costs.get("plan_only", {})
    if plan:
        lines.append(f"- `slmc compile --plan-only`: " +
                     (f"error: {plan['error']}" if "error" in plan else f"median {_num(plan['median_s'], 2)} s"))
    sweep = costs.get("sweep")
    if sweep and "error" not in sweep.get("sweep", {}):
        s = sweep["sweep"]
        lines += [f"- sweep {len(sweep['points'])} points (compress none/int8/int4 × device cpu/mobile_arm64, "
                  f"{' '.join(sweep['base_overrides'])}) into one out_dir: {_num(s['total_s'])} s; one full compile "
                  f"(first point, nothing cached): {_num(sweep['one_full_compile_s'])} s → "
                  f"{_num(sweep['sweep_vs_one_compile'], 2)}× one compile",
                  f"- {len(sweep['points'])} independent compiles: {_num(sweep['independent'].get('total_s'))} s "
                  f"({sweep['independent'].get('how', 'measured: --no-cache, fresh out_dir each')}) → the sweep "
                  f"saves {_num(sweep.get('independent_vs_sweep'), 2)}×"]
        multirun = sweep.get("multirun")
        if multirun:
            lines.append("- `slmc compile -m` (one process): " +
                         (f"error: {multirun['error'][:300]}" if "error" in multirun
                          else f"{_num(multirun['seconds'])} s, {len(multirun['bundles'])} bundles"))
    elif sweep:
        lines.append(f"- sweep: error: {sweep['sweep']['error']}")
    return lines + [""]


def profile_section(result: dict) -> list[str]:
    lines = ["## Profile", ""]
    for model, info in result["models"].items():
        graphs = info.get("graphs", {})
        parts = [f"{name}: {g['nodes']} nodes ({g.get('nodes_after_ort', '?')} after ORT_ENABLE_ALL)"
                 + (f" [{', '.join(f'{k} {v}' for k, v in g['fused_ops'].items())}]" if g.get("fused_ops") else "")
                 for name, g in graphs.items()]
        lines.append(f"- {model} graphs: " + "; ".join(parts))
        bundles = info.get("bundles", {})
        if bundles:
            built = "; ".join(f"{p} built {b.get('created') or '?'} ({b['how']})" for p, b in bundles.items())
            same = info.get("same_checkpoint_in_every_bundle")
            lines.append(f"- {model} slmc bundles: {built}; same checkpoint in every bundle: "
                         f"{'yes' if same else '**no**' if same is False else '?'}")
        for batch, rows in info.get("cells", {}).items():
            shares = [f"{name} {_num(100 * row['session_fraction']['median'], 0, '%')}"
                      for name, row in rows.items() if row.get("session_fraction", {}).get("median") is not None]
            if shares:
                lines.append(f"- {model} b{batch}: share of slmc decode time inside ORT session.run "
                             f"(the rest is the Python loop): {', '.join(shares)}")
            agree = [f"{name} {row['tokens_agree_with_reference']}/{len(row['first_tokens'])}"
                     for name, row in rows.items()
                     if row.get("tokens_agree_with_reference") is not None and row.get("first_tokens")]
            if agree:
                lines.append(f"- {model} b{batch}: leading greedy tokens (row 0) equal to PyTorch eager's: "
                             f"{', '.join(agree)} (a same-weights check; quantized systems may drift)")
    return lines + [""]


PAIRS = (("slmc int4", "ort-genai int4"), ("slmc fp32", "ort-genai fp32"), ("slmc int4", "torch-eager fp32"))


def conditions_section(result: dict) -> list[str]:
    """One line per model, batch and condition: slmc/peer decode ratios side by side (only when
    more than one condition was measured: thread counts, defaults, defaults with a busy process)."""
    models = {m: i for m, i in result["models"].items() if len(i.get("conditions", {})) > 1}
    if not models:
        return []
    lines = ["## Ratios by condition (decode, medians of the same rounds)", "",
             "| model | batch | condition | " + " | ".join(f"{a} / {b}" for a, b in PAIRS) + " | slmc threads |",
             "|---|---:|---|" + "---:|" * len(PAIRS) + "---|"]
    for model, info in models.items():
        for label, cells in info["conditions"].items():
            for batch, rows in cells.items():
                def decode(name):
                    row = rows.get(name) or {}
                    return (row.get("decode_tokens_per_s") or {}).get("median")
                ratios = [decode(a) / decode(b) if decode(a) and decode(b) else None for a, b in PAIRS]
                chosen = sorted({t for name, row in rows.items() if name.startswith("slmc")
                                 for t in row.get("threading", [])})
                lines.append(f"| {model} | {batch} | {label} | " + " | ".join(_num(r, 2, "×") for r in ratios)
                             + f" | {', '.join(chosen) or '–'} |")
    return lines + [""]


def render(result: dict) -> str:
    lines = machine_section(result)
    lines += targets_section(result.get("targets", []))
    lines += conditions_section(result)
    for model, info in result["models"].items():
        if "error" in info:
            lines += [f"## {model}", "", f"not measured: {info['error']}", ""]
            continue
        by_condition = info.get("conditions") or {"": info["cells"]}
        for label, cells in by_condition.items():
            for batch, rows in cells.items():
                lines += cell_table(model, int(batch), rows, info, label if len(by_condition) > 1 else "")
    lines += costs_section(result.get("compile_costs"))
    lines += profile_section(result)
    notes = result.get("notes", [])
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(json.loads(Path(sys.argv[1]).read_text())))
