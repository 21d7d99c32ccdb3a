"""The manifest describes the graph it ships: the shipped graph measured against the fp32 checkpoint.

Graphs come from the shared fixture bundle (a tiny random Llama exported by slmc.export): its
fp32 export, an int4 and an fp16 quantization of it (slmc.export.quantize), and copies broken on
purpose. The compile path (int8 / int4 / fp32 bundles) is asserted in tests/test_compile_e2e.py.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from slmc.errors import StageError
from slmc.export.onnx_files import copy_onnx
from slmc.export.quantize import quantize
from slmc.layout import LAYOUT
from slmc.load import load_config
from slmc.runtime.errors import BundleError
from slmc.runtime.manifest import MANIFEST_NAME, parity_blocks, read_manifest
from slmc.runtime.verify import verify_bundle
from slmc.stages.base import Results
from slmc.stages.deploy import heldout_tokens, last_model_stage, measure_shipped_graph
from slmc.stages.results import CompressResult, ExportResult
from slmc.stages.shipped_parity import held_out_prompts, measure_shipped, with_verdict
from tests.fixtures.bundle import training_lines

EXPORT_PARITY = {"cases": {"prefill": 1e-6, "decode_with_past": 2e-6, "left_padded_batch": 2e-6},
                 "greedy_identical": True, "tolerance": 1e-3, "ok": True, "greedy_torch": [5, 6], "greedy_onnx": [5, 6]}


def _edit_lm_head(source: Path, dest: Path, change) -> Path:
    """A copy of the graph whose output layer (the MatMul that produces `logits`) has `change(weights)`."""
    model = onnx.load(str(source))
    node = next(n for n in model.graph.node if "logits" in n.output)
    assert node.op_type == "MatMul", node.op_type  # the fixture's export: logits = hidden @ W
    weights = next(i for i in model.graph.initializer if i.name == node.input[1])
    weights.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(weights)), weights.name))
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dest))
    return dest


@pytest.fixture(scope="module")
def run_dir(built, tmp_path_factory) -> Path:
    """A run folder as the deploy stages leave it: checkpoint, tokenizer, held-out text, the export."""
    bundle, checkpoint = built
    run = tmp_path_factory.mktemp("run")
    shutil.copytree(checkpoint, run / LAYOUT.final_checkpoint)
    for name, dest in (("tokenizer.json", LAYOUT.tokenizer), ("tokenizer_config.json", LAYOUT.tokenizer_config)):
        (run / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle / name, run / dest)
    (run / LAYOUT.heldout_text).parent.mkdir(parents=True)
    (run / LAYOUT.heldout_text).write_text("\n".join(training_lines(80)), encoding="utf-8")
    (run / LAYOUT.export_model).parent.mkdir(parents=True)
    copy_onnx(bundle / "model.onnx", run / LAYOUT.export_model)
    return run


@pytest.fixture(scope="module")
def checkpoint(run_dir):
    from slmc.export.onnx_export import load_checkpoint

    return load_checkpoint(run_dir / LAYOUT.final_checkpoint)


def _measure(checkpoint, run_dir, graph: Path, precision: str):
    return measure_shipped(checkpoint, graph, heldout_tokens(run_dir), stage="compress", precision=precision,
                           max_seq_len=128, heldout_perplexity=42.0)


def test_the_fp32_export_reproduces_the_checkpoint(checkpoint, run_dir):
    measured = _measure(checkpoint, run_dir, run_dir / LAYOUT.export_model, "fp32")
    block = with_verdict(measured.to_dict(), 1e-3)
    assert block["greedy_identical"] and block["ok"] and block["top1_agreement"] == 1.0
    assert block["greedy"]["agree"] == block["greedy"]["tokens"] == 64
    assert block["greedy"]["first_divergence"] == [None] * 4
    assert block["greedy"]["graph"] == block["greedy"]["reference"]
    assert 0.0 <= block["max_abs_logit_diff"] < 1e-4 and block["cases"] == {"prefill": block["max_abs_logit_diff"]}
    assert block["heldout_perplexity"] == 42.0 and block["note"] is None


def test_an_int4_graph_is_measured_as_it_is(checkpoint, run_dir, tmp_path):
    int4 = tmp_path / "int4" / "model.onnx"
    int4.parent.mkdir()
    quantize(run_dir / LAYOUT.export_model, int4, precision="int4", target="ort", block_size=32)
    block = with_verdict(_measure(checkpoint, run_dir, int4, "int4").to_dict(), 1e-3)
    # 4-bit weights move every logit: far above the exact-parity tolerance, and finite
    assert 1e-3 < block["max_abs_logit_diff"] < 10 and not block["ok"]
    assert block["precision"] == "int4" and block["greedy"]["tokens"] == 64
    assert block["greedy"]["agree"] == sum(16 if f is None else f for f in block["greedy"]["first_divergence"])


def test_a_broken_graph_is_reported(checkpoint, run_dir, tmp_path):
    """The output layer negated: every greedy token is the checkpoint's least likely one."""
    broken = _edit_lm_head(run_dir / LAYOUT.export_model, tmp_path / "model.onnx", lambda w: -w)
    measured = _measure(checkpoint, run_dir, broken, "int8")
    block = with_verdict(measured.to_dict(), 1e-3)
    assert not block["greedy_identical"] and block["greedy"]["agree"] == 0
    assert block["greedy"]["first_divergence"] == [0, 0, 0, 0] and block["top1_agreement"] == 0.0
    assert block["max_abs_logit_diff"] > 0.1 and not block["ok"]
    assert "0/64 identical" in measured.describe()


def test_a_graph_with_non_finite_logits_is_refused(run_dir, tmp_path):
    broken = _edit_lm_head(run_dir / LAYOUT.export_model, tmp_path / "model.onnx", lambda w: np.full_like(w, np.nan))
    cfg = load_config(["compress=int8", "export.max_seq_len=128"])
    with pytest.raises(StageError) as err:
        measure_shipped_graph(cfg, run_dir, "compress", broken, 42.0)
    assert "non-finite" in err.value.render() and "compress" in err.value.render()


def test_the_package_describes_the_shipped_graph(built, run_dir, checkpoint):
    """ORT fp16: the package stage finds no measurement on a cached compress result, measures the shipped
    graph itself, reads io from it (float16 cache), keeps the export's block apart, and verifies."""
    from slmc.stages.package import run_package

    bundle, _ = built
    fixture = json.loads((bundle / MANIFEST_NAME).read_text())
    cfg = load_config(["device=gpu_server", "compress=fp16", "export.max_seq_len=128"])
    fp16 = run_dir / LAYOUT.compressed_model
    fp16.parent.mkdir(parents=True, exist_ok=True)
    report = quantize(run_dir / LAYOUT.export_model, fp16, precision="fp16", target="ort")
    results = Results()
    results.add("export", ExportResult(
        onnx=LAYOUT.export_model, checkpoint_ppl=40.0, heldout_ppl=40.0, heldout_eval_tokens=900, exporter="dynamo",
        opset=18, nodes=200, export_seconds=1.0, io=fixture["io"], kv_cache=fixture["kv_cache"],
        model=fixture["model"], parity=EXPORT_PARITY))
    results.add("compress", CompressResult(
        onnx=LAYOUT.compressed_model, report={k: v for k, v in asdict(report).items() if not isinstance(v, Path)},
        heldout_ppl=40.5, ppl_increase=0.0125, shipped=None, cached=True))
    run_package(cfg, run_dir, results)
    folder = run_dir / LAYOUT.bundle
    manifest = read_manifest(folder)
    shipped, export = parity_blocks(manifest)
    assert export == EXPORT_PARITY and manifest["metrics"]["export_parity"] == EXPORT_PARITY
    assert shipped["stage"] == "compress" and shipped["precision"] == "fp16" and shipped["heldout_perplexity"] == 40.5
    assert shipped["greedy_identical"] and 0 < shipped["max_abs_logit_diff"] <= 1e-2  # fp16 weights: close, not exact
    assert shipped["tolerance"] == cfg.export.parity_tolerance
    assert shipped["ok"] == (shipped["max_abs_logit_diff"] <= cfg.export.parity_tolerance)
    # io is the shipped graph's: the cache is float16 there and in kv_cache; logits stay float32
    dtypes = {e["name"]: e["dtype"] for e in manifest["io"]["inputs"] + manifest["io"]["outputs"]}
    assert manifest["kv_cache"]["dtype"] == dtypes["past_key_values.0.key"] == dtypes["present.1.value"] == "float16"
    assert dtypes["logits"] == "float32" and dtypes["input_ids"] == "int64"
    readme = (folder / "README.md").read_text()
    assert "This bundle's graph (compress, fp16)" in readme and "fp32 export parity" in readme
    verify_bundle(folder, allow_foreign=True)  # CUDA is not here: integrity only
    # the new fields are under the manifest's checksum
    data = json.loads((folder / MANIFEST_NAME).read_text())
    data["metrics"]["parity"]["greedy"]["agree"] -= 1
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="manifest_sha256 does not match"):
        verify_bundle(folder, allow_foreign=True)


def test_an_old_bundle_still_reads(bundle_copy, rewrite_manifest):
    """A bundle packaged before export_parity existed: accepted, its parity read as the export's."""
    rewrite_manifest(bundle_copy, lambda m: m["metrics"].update(parity=EXPORT_PARITY))
    verify_bundle(bundle_copy)
    assert parity_blocks(read_manifest(bundle_copy)) == (None, EXPORT_PARITY)
    assert parity_blocks({"metrics": {}}) == (None, None)


@pytest.mark.parametrize("overrides, stage", [
    ([], "optimize"),
    (["compress=int4"], "compress"),
    (["compress=int8"], "compress"),
    (["device=gpu_server", "compress=fp16"], "compress"),  # ORT fp16 is not fused: export -> compress
    (["device=jetson_orin_nano", "runtime=tensorrt"], "prepare_tensorrt"),
    (["device=jetson_orin_nano", "runtime=tensorrt", "compress=fp16"], "compress"),
])
def test_the_last_model_stage_is_the_one_that_ships(overrides, stage):
    assert last_model_stage(load_config(overrides)) == stage


def test_prompts_fit_the_context():
    tokens = list(range(1000))
    prompts, new = held_out_prompts(tokens, 128)
    assert [p[0] for p in prompts] == [0, 328, 656, 984] and {len(p) for p in prompts} == {16} and new == 16
    prompts, new = held_out_prompts(tokens, 10)  # a tiny context: half prompt, half new tokens
    assert {len(p) for p in prompts} == {5} and new == 5
    prompts, new = held_out_prompts([7, 8, 9], 128)  # fewer tokens than a prompt: one prompt of all of them
    assert prompts == [[7, 8, 9]] and new == 16
