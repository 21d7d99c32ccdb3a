"""No Markdown injection through the run and sweep reports.

report.md and sweep_report.md place names that come from the config, the run folder and
the manifest (device, runtime version, run and folder names, tokenizer paths, rule
messages quoting config values). Every string of a real report context is replaced by
each hostile string of the injection suite: the report must keep the template's lines,
block structure (headings, fences, lists, HTML) and table cells, and show the value
escaped by the `md` filter. Links to run folders are percent-encoded.
"""

from __future__ import annotations

import re

import pytest

from slmc.render import markdown_text, render_template
from slmc.report import run_context
from tests.test_report import METRICS, PPL, full_results, make_run

from .conftest import count
from .test_injection import HOSTILE

PLACED = [v for v in HOSTILE if v]  # "" is falsy: it takes the template's "absent" branches
BRANCHES = {"state", "plot"}
"""Context keys that pick a template branch or name slmc's own file, not placed text."""

WARNING = {"rule": "memory.fits_device", "paths": "device.memory_gb", "message": "needs 1 GB", "fix": "device=x"}


def replace_strings(value, hostile: str, key: str = ""):
    """A copy of a template context with every placed string replaced by `hostile`."""
    if isinstance(value, dict):
        return {k: value[k] if k in BRANCHES else replace_strings(v, hostile, k) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_strings(v, hostile, key) for v in value]
    return hostile if isinstance(value, str) else value


def block(line: str) -> str:
    """The CommonMark block a line opens (what a value must never change)."""
    for kind, pattern in (("fence", r"\s*(```|~~~)"), ("heading", r"#{1,6}(\s|$)"), ("html", r"\s*<"),
                          ("quote", r"\s*>"), ("list", r"\s*([-*+]|\d+[.)])(\s|$)"), ("table", r"\|"),
                          ("blank", r"\s*$")):
        if re.match(pattern, line):
            return kind
    return "text"


def cells(line: str) -> int:
    """Table cell separators: '|' not escaped by an odd run of backslashes."""
    return len(re.findall(r"(?<!\\)(?:\\\\)*\|", line))


def assert_placed_safely(template: str, context: dict, value: str) -> str:
    benign = render_template(template, replace_strings(context, "harmless")).splitlines()
    text = render_template(template, replace_strings(context, value))
    lines = text.splitlines()
    count("injection strings")
    assert len(lines) == len(benign), (template, value)
    escaped = {markdown_text(value)}
    for old, new in zip(benign, lines):
        assert block(new) == block(old), (template, value, new[:200])
        assert cells(new) == cells(old), (template, value, new[:200])
        if new != old:
            assert any(e in new for e in escaped), (template, value, new[:200])
    return text


@pytest.fixture(scope="module")
def report_context(tmp_path_factory) -> dict:
    """What report.md.j2 gets for a complete int4 run with a cached stage and a rule warning."""
    run, _ = make_run(tmp_path_factory.mktemp("report"), ["device=cpu", "compress=int4"], metrics=METRICS,
                      manifest_ppl=PPL, model_bytes=1000)
    context, _ = run_context(run, full_results(train_cached=True))
    assert context["state"] == "complete" and context["stages"] and context["bundle_rows"]
    return {**context, "warnings": [WARNING]}


def test_run_report_places_every_string_through_md(report_context):
    for value in PLACED:
        assert_placed_safely("report.md.j2", report_context, value)


def test_run_report_places_partial_runs_safely(report_context):
    """The other branches: no training metrics, no bundle, no perplexity or parity rows."""
    partial = {**report_context, "state": "partial", "training": None, "bundle_rows": [], "ppl_rows": [],
               "parity_rows": [], "plot": None, "seconds_ran": None, "bound": "bound"}
    for value in PLACED:
        assert_placed_safely("report.md.j2", partial, value)


@pytest.fixture(scope="module")
def sweep_context(tmp_path_factory) -> dict:
    """What sweep_report.md.j2 gets for a two-run sweep, with the measured-here branch on."""
    from slmc.sweep_report import collect, find_runs
    from slmc.sweep_report import sweep_context as build

    root = tmp_path_factory.mktemp("sweep")
    for overrides, size in ((["device=cpu", "compress=none"], 3000), (["device=cpu", "compress=int8"], 1000)):
        run, _ = make_run(root, overrides, manifest_ppl={"checkpoint": 10.0, "export": 10.0}, model_bytes=size)
        (run / "report.md").write_text("# report\n")
    runs = [collect(run, root, measure=False, runs=1) for run in find_runs(root)]
    context, _ = build(root, runs, measure=False, bench_runs=1)
    assert all(row["link"] for row in context["rows"])
    return {**context, "measure": True}


def test_sweep_report_places_every_string_through_md(sweep_context):
    for value in PLACED:
        text = assert_placed_safely("sweep_report.md.j2", sweep_context, value)
        for destination in re.findall(r"(?<!\\)\]\(([^)]*)\)", text):  # links, not escaped brackets
            assert re.fullmatch(r"[A-Za-z0-9_.~/%-]*", destination), (value, destination[:100])


def test_a_hostile_folder_name_links_to_itself(sweep_context):
    """The percent-encoded link still names the folder: a Markdown viewer opens the right report."""
    from urllib.parse import unquote

    name = "run (a) [b] <c> d|e"
    rows = [{**row, "name": name, "link": f"{name}/report.md"} for row in sweep_context["rows"]]
    text = render_template("sweep_report.md.j2", {**sweep_context, "rows": rows})
    (destination,) = set(re.findall(r"\]\(([^)]*report\.md)\)", text))
    assert unquote(destination) == f"{name}/report.md"
    assert f"[{markdown_text(name)}]" in text


def test_the_checks_catch_a_value_placed_without_md(report_context, monkeypatch):
    """The harness itself: the same report with the `md` filter made a no-op fails these checks."""
    import slmc.render as render

    monkeypatch.setitem(render.environment().filters, "md", lambda v: v)
    render._compiled.cache_clear()
    try:
        for value in ("new\nline", "| a | b |", "<script>alert(1)</script>"):
            with pytest.raises(AssertionError):
                assert_placed_safely("report.md.j2", report_context, value)
    finally:
        monkeypatch.undo()
        render._compiled.cache_clear()


def test_every_placed_value_in_the_report_templates_is_filtered():
    """A new placeholder without `md` (or `urlencode` in a link) fails here, before any report is built;
    the exceptions are slmc's own plot file name and a yes/no."""
    from importlib import resources

    names = {p.name for p in resources.files("slmc.templates").iterdir()}
    assert {"report.md.j2", "sweep_report.md.j2"} <= names
    for name in ("report.md.j2", "sweep_report.md.j2"):
        source = resources.files("slmc.templates").joinpath(name).read_text(encoding="utf-8")
        placed = re.findall(r"\{\{(.*?)\}\}", source)
        unfiltered = [p.strip() for p in placed if not re.search(r"\|\s*(md|urlencode|length)\s*$", p)]
        assert all(p in ("plot", '"yes" if greedy_identical else "no"') for p in unfiltered), (name, unfiltered)
