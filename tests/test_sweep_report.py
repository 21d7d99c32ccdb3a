"""The sweep report: runs found, Pareto fronts marked, TensorRT left to its device, pareto.png deterministic.

Sweep folders are built by hand (tests/test_report.py's make_run); one slow test
benchmarks a real tiny bundle.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from slmc.errors import SlmcError
from slmc.sweep_report import PARETO_PLOT, find_runs, measure_decode, pareto_front, write_sweep_report
from tests.test_report import make_run

# (label, overrides, shipped perplexity stage and value, model bytes)
SWEEP = {
    "A": (["device=cpu", "compress=none"], {"checkpoint": 10.0, "export": 10.0}, 8000),
    "B": (["device=cpu", "compress=int8"], {"checkpoint": 10.0, "export": 10.0, "compress": 10.2}, 3000),
    "C": (["device=cpu", "compress=int4"], {"checkpoint": 10.0, "export": 10.0, "compress": 11.0}, 2000),
    "D": (["device=mobile_arm64", "compress=int8"], {"checkpoint": 10.0, "export": 10.0, "compress": 10.5}, 3500),
    "E": (["device=jetson_orin_nano", "runtime=tensorrt", "compress=fp16"],
          {"checkpoint": 10.0, "export": 10.0, "compress": 10.1}, 5000),
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A sweep folder of five bundles; returns it and {label: run folder name}."""
    root = tmp_path_factory.mktemp("sweep")
    names = {}
    for label, (overrides, ppl, size) in SWEEP.items():
        run, _ = make_run(root, overrides, manifest_ppl=ppl, model_bytes=size)
        names[label] = run.name
    return root, names


def rows(text: str) -> dict[str, list[str]]:
    """Table rows keyed by run folder name, as lists of cells."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"^\| \[?([A-Za-z0-9_.-]+)\]?", line)
        if match and line.count("|") >= 9 and not line.startswith("| run |"):
            found[match.group(1)] = [c.strip() for c in line.strip("|").split("|")]
    return found


def test_pareto_front_by_hand():
    points = [(1, 5), (2, 4), (2, 4), (3, 6), (None, 1), (4, 1), (4, 2), (0.5, 9)]
    #          front   front   tie     (2,4)    missing    front   (4,1)   front
    assert pareto_front(points) == [True, True, True, False, False, True, False, True]
    assert pareto_front([]) == []


def test_table_marks_the_known_fronts(sweep):
    root, names = sweep
    text = write_sweep_report(root, measure=False).read_text()
    table = rows(text)
    assert set(table) == set(names.values())
    cells = {label: table[name] for label, name in names.items()}
    size_front = {label for label, c in cells.items() if "size" in c[7]}
    assert size_front == {"A", "B", "C", "E"}  # D (3.5 kB, 10.5) is beaten by B (3.0 kB, 10.2)
    bound_front = {label for label, c in cells.items() if "speed on the device" in c[7]}
    assert {"A", "C"} <= bound_front and "D" not in bound_front  # lowest perplexity; fastest; B beats D
    assert cells["D"][7] == ""
    assert cells["B"][1] == "cpu/int8" and cells["B"][3] == "3.02 kB" and cells["B"][4] == "10.200 (compress)"
    assert cells["A"][4] == "10.000 (export)" and cells["E"][2] == "tensorrt"
    assert all(c[5] == "not measured" for c in cells.values())
    assert re.fullmatch(r"[\d,]+", cells["C"][6])  # the device bound is always there
    order = [label for name in table for label, n in names.items() if n == name]
    assert order == ["A", "B", "C", "E", "D"]  # by device, largest bundle first


def test_pareto_png_is_deterministic(sweep, tmp_path):
    root, _ = sweep
    write_sweep_report(root, measure=False)
    first = (root / PARETO_PLOT).read_bytes()
    copy = Path(shutil.copytree(root, tmp_path / root.name))  # same folder name: the plot's title
    (copy / PARETO_PLOT).unlink()
    write_sweep_report(copy, measure=False)
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and len(first) > 10_000
    assert (copy / PARETO_PLOT).read_bytes() == first


def test_measured_here_and_needs_device(sweep, monkeypatch):
    """bench runs for ORT bundles (foreign ones allowed); TensorRT bundles are left to their device."""
    import slmc.runtime.bench as bench_module

    calls = []

    def fake_bench(bundle, *, prompt_tokens, new_tokens, runs, allow_foreign):
        calls.append((Path(bundle).parent.name, prompt_tokens, new_tokens, runs, allow_foreign))
        speed = {3000: 900.0, 2000: 1200.0}.get((Path(bundle) / "model.onnx").stat().st_size, 500.0)
        return {"decode_tokens_per_s": speed, "provider": "CPUExecutionProvider"}

    monkeypatch.setattr(bench_module, "bench", fake_bench)
    root, names = sweep
    table = rows(write_sweep_report(root, measure=True, runs=2).read_text())
    assert sorted(c[0] for c in calls) == sorted(names[k] for k in "ABCD")
    assert all(c[1:] == (64, 64, 2, True) for c in calls)
    cells = {label: table[name] for label, name in names.items()}
    assert cells["E"][5] == "needs device (TensorRT engine is built there)"
    assert cells["B"][5] == "900" and cells["C"][5] == "1,200" and cells["A"][5] == "500"
    here = {label for label, c in cells.items() if "speed here" in c[7]}
    assert here == {"A", "B", "C"}  # D (500 tok/s, 10.5) is beaten by B (900, 10.2)


def test_measure_decode_skips_tensorrt_without_loading(tmp_path):
    manifest = {"runtime": {"name": "tensorrt", "execution_provider": "TensorrtExecutionProvider"}}
    assert measure_decode(tmp_path / "absent", manifest, 1) == (None, "needs device (TensorRT engine is built there)")


def test_hidden_folders_are_skipped_and_empty_sweeps_fail(tmp_path):
    hidden = tmp_path / ".cache" / "package" / "k" / "bundle"
    hidden.mkdir(parents=True)
    (hidden / "manifest.json").write_text("{}")
    assert find_runs(tmp_path) == []
    with pytest.raises(SlmcError, match="no run folder with bundle/manifest.json"):
        write_sweep_report(tmp_path, measure=False)


@pytest.mark.slow
def test_real_bundle_is_benchmarked(tmp_path):
    """A real tiny bundle (exported by slmc.export) gets a measured decode speed."""
    from tests.fixtures.bundle import build_bundle

    run = tmp_path / "sweep" / "tiny-run"
    run.mkdir(parents=True)
    bundle, _ = build_bundle(tmp_path / "build")
    shutil.copytree(bundle, run / "bundle")
    table = rows(write_sweep_report(tmp_path / "sweep", measure=True, runs=1).read_text())
    measured = table["tiny-run"][5]
    assert re.fullmatch(r"[\d,]+", measured) and int(measured.replace(",", "")) > 0
