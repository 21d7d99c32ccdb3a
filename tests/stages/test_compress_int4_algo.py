"""compress.int4_algo: each onnxruntime MatMulNBits algorithm compiles the tiny model's int4 bundle,
which loads, generates and keeps a sane held-out perplexity; the manifest says which algorithm ran.

One module-scoped output folder: the fp32 compile trains once, every int4 compile reuses its
stages from the stage cache and runs only compress and package.
"""

from __future__ import annotations

import json
import math

import onnx
import pytest

from slmc.load import load_config
from slmc.pipeline import compile_config

FAST = ["train.max_steps=40", "train.batch_size=8", "train.seq_len=64", "train.eval_every=20",
        "train.save_every=20", "train.warmup_steps=5", "export.max_seq_len=128", "generation.max_new_tokens=16"]


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("int4_algo")


def _compile(out_dir, *overrides):
    return compile_config(load_config([*FAST, f"out_dir={out_dir}", *overrides]))


@pytest.fixture(scope="module")
def fp32_run(out_dir):
    return _compile(out_dir)


def _nbits(bundle) -> list[onnx.NodeProto]:
    graph = onnx.load(bundle / "model.onnx", load_external_data=False).graph
    return [n for n in graph.node if n.op_type == "MatMulNBits"]


@pytest.mark.parametrize("algo", ["rtn", "hqq", "gptq", "kquant"])
def test_each_algorithm_ships_a_working_int4_bundle(out_dir, fp32_run, algo):
    from slmc.runtime import load_bundle

    summary = _compile(out_dir, "compress=int4", f"compress.int4_algo={algo}", "compress.block_size=32")
    assert summary.stages["train"].cached and not summary.stages["compress"].cached
    manifest = json.loads((summary.bundle / "manifest.json").read_text())
    compress = manifest["metrics"]["compress"]
    assert compress["int4_algo"] == algo and compress["block_size"] == 32
    ppl = manifest["metrics"]["heldout_perplexity"]
    # finite, and within the int4 option's gate of the fp32 graph (the compile enforces it too)
    assert math.isfinite(ppl["compress"]) and 1.0 < ppl["compress"] <= ppl["optimize"] * 1.25
    nodes = _nbits(summary.bundle)
    assert nodes and all({a.name: a.i for a in n.attribute if a.name == "block_size"}["block_size"] == 32
                         for n in nodes)
    zero_points = [len(n.input) > 3 and n.input[3] != "" for n in nodes]
    # compress.symmetric=true (the default): rtn writes none; hqq, kquant and gptq (run asymmetric) always do
    assert not any(zero_points) if algo == "rtn" else all(zero_points)
    bundle = load_bundle(summary.bundle)
    tokens = bundle.generate_ids("def add(a, b):", max_new_tokens=8, ignore_eos=True)[0]
    assert len(tokens) == 8 and all(0 <= t < bundle.vocab_size for t in tokens)
    assert "(" + algo + ")" in (summary.run_dir / "report.md").read_text()


def test_algorithms_give_different_weights(out_dir, fp32_run):
    """Each name reaches a different quantizer: the shipped int4 weights differ between algorithms."""
    from onnx import numpy_helper

    def first_weights(algo):
        summary = _compile(out_dir, "compress=int4", f"compress.int4_algo={algo}", "compress.block_size=32")
        graph = onnx.load(summary.bundle / "model.onnx").graph
        inits = {i.name: i for i in graph.initializer}
        return numpy_helper.to_array(inits[_nbits(summary.bundle)[0].input[2]]).ravel()  # the scales (hqq: flat)

    scales = {algo: first_weights(algo) for algo in ("rtn", "hqq", "kquant")}
    assert not (scales["rtn"] == scales["hqq"]).all() and not (scales["rtn"] == scales["kquant"]).all()


def test_gptq_tunes_the_block_size_too(out_dir, fp32_run):
    summary = _compile(out_dir, "compress=int4", "compress.int4_algo=gptq", "compress.calibration_samples=4")
    trials = summary.stages["compress"].block_size_trials  # device=cpu: 128, 64, 32; 32 is the reference
    assert 128 not in [t["block_size"] for t in trials]  # hidden 128: one block, which gptq cannot pack
    assert trials[0]["block_size"] == 32 and sum(t["kept"] for t in trials) == 1
    assert all(math.isfinite(t["heldout_ppl"]) for t in trials)
    kept = next(t["block_size"] for t in trials if t["kept"])
    assert {a.i for n in _nbits(summary.bundle) for a in n.attribute if a.name == "block_size"} == {kept}
