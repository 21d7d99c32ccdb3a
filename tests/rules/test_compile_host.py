"""memory.fits_compile_host: the compile's own peak memory, from the measured stage costs, both ways.

Checkpoints here are config.json files (+ a 16-byte safetensors): the rule reads shapes, never weights.
"""

from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path

import pytest

from slmc.estimate import Arch, fmt_bytes, param_count
from slmc.families.published import PUBLISHED
from slmc.load import load_config
from slmc.rules.memory import (
    COMPILE_HOST_MEASURED, COMPILE_HOST_RESULTS, compile_host_bytes, compile_host_line,
)

ROOT = Path(__file__).resolve().parents[2]
RULE = "memory.fits_compile_host"
QWEN = PUBLISHED["qwen2.5-0.5b"]
ONE_B = [
    "model.hidden_size=2048", "model.num_hidden_layers=22", "model.num_attention_heads=32",
    "model.num_key_value_heads=4", "model.intermediate_size=5632", "model.vocab_size=32000",
]


def _qwen(make_checkpoint):
    return make_checkpoint("qwen", **QWEN)


def test_the_measured_points_are_those_of_the_results_file():
    """The rule's arithmetic is the benchmark's: same parameter counts, same peaks."""
    results = json.loads((ROOT / COMPILE_HOST_RESULTS).with_suffix(".json").read_text())
    shapes = {s["name"]: s for s in results["shapes"]}
    for index, name in enumerate(("smollm2-135m", "qwen2.5-0.5b")):
        shape = shapes[name]
        assert param_count(Arch.from_hf_config(shape["config"])) == shape["parameters"]
        int4 = shape["stages"]["compile-int4"]
        through_optimize = max(v for k, v in int4["stage_tree_rss_peak_bytes"].items()
                               if k in ("train", "export", "optimize"))
        measured = {"int4": int4["peak_rss_bytes"], "none": through_optimize,
                    "int8": shape["stages"]["compile-int8"]["peak_rss_bytes"]}
        for compress, points in COMPILE_HOST_MEASURED.items():
            assert points[index] == (4 * shape["parameters"], measured[compress]), (name, compress)


def test_the_lines_reproduce_both_measurements_and_grow_with_size():
    for compress, ((x0, y0), (x1, y1)) in COMPILE_HOST_MEASURED.items():
        base, slope = compile_host_line(compress)
        assert base + slope * x0 == pytest.approx(y0) and base + slope * x1 == pytest.approx(y1)
        assert slope > 1 and base > 0  # the export holds the fp32 weights at least once, plus libraries


def test_a_half_billion_checkpoint_warns_on_a_small_host_and_names_a_host_that_fits(check, make_checkpoint):
    ckpt = _qwen(make_checkpoint)
    base = ["init=pretrained", f"init.path={ckpt}", "train=none", "compress=int4"]
    (v,) = check([*base, "host.memory_gb=12"], RULE)
    need, measured = compile_host_bytes(Arch.from_hf_config(QWEN), "int4", "ort")
    assert v.severity == "warning" and measured
    assert f"peaks at about {fmt_bytes(need)}" in v.message and "494M parameters" in v.message
    assert "more than host.memory_gb 12 GB" in v.message and COMPILE_HOST_RESULTS in v.message
    assert v.paths == ("host.memory_gb", "compress.precision", "init.path")
    enough = int(v.fix.split("host.memory_gb=")[1].split(")")[0])
    assert enough * 1e9 >= need > (enough - 1) * 1e9
    assert check([*base, f"host.memory_gb={enough}"], RULE) == []


def test_the_lighter_quantization_is_offered_when_it_alone_fits(check, make_checkpoint):
    ckpt = _qwen(make_checkpoint)
    a = Arch.from_hf_config(QWEN)
    needs = {p: compile_host_bytes(a, p, "ort")[0] for p in ("int8", "int4")}
    heavy, light = sorted(needs, key=needs.get, reverse=True)
    room = (needs[heavy] + needs[light]) / 2e9  # between the two
    base = ["init=pretrained", f"init.path={ckpt}", "train=none", f"host.memory_gb={room:.2f}"]
    (v,) = check([*base, f"compress={heavy}"], RULE)
    assert v.fix.startswith(f"use compress={light} (about {fmt_bytes(needs[light])})")
    assert check([*base, f"compress={light}"], RULE) == []


def test_small_models_fit_the_default_host(check, make_checkpoint):
    assert check([], RULE) == []  # model=tiny from scratch
    small = make_checkpoint("small")  # tests/rules/conftest.py's 4-layer llama
    assert check(["init=pretrained", f"init.path={small}", "train=none", "compress=int8"], RULE) == []


def test_the_model_group_is_sized_when_training_from_scratch(check):
    (v,) = check([*ONE_B, "host.memory_gb=8", "compress=int4"], RULE)
    assert v.paths[-1] == "model" and "22 layers × hidden 2048" in v.message
    a = Arch.from_model(load_config(ONE_B).model)
    assert fmt_bytes(compile_host_bytes(a, "int4", "ort")[0]) in v.message


def test_paths_not_measured_take_the_largest_measured_line():
    a = Arch.from_hf_config(QWEN)
    largest = max(compile_host_bytes(a, p, "ort")[0] for p in ("fp32", "int8", "int4"))
    assert compile_host_bytes(a, "fp16", "ort") == (largest, False)
    assert compile_host_bytes(a, "int8", "tensorrt") == (largest, False)


def test_a_cuda_host_is_checked_against_this_machines_ram(check, make_checkpoint, monkeypatch):
    import psutil

    memory = namedtuple("svmem", "total available")
    ckpt = _qwen(make_checkpoint)
    overrides = ["init=pretrained", f"init.path={ckpt}", "train=none", "compress=int4", "host.accelerator=cuda",
                 "host.memory_gb=80"]
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory(8e9, 6e9))
    (v,) = check(overrides, RULE)
    assert "more than this machine's 8 GB of RAM" in v.message and v.paths[0] == "host.accelerator"
    assert "host.memory_gb=" not in v.fix  # the GPU's memory is not what the export needs
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory(64e9, 60e9))
    assert check(overrides, RULE) == []
