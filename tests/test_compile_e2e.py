"""End to end: `slmc compile` on the tiny model, then the bundle with the runtime, ORT GenAI and PyTorch.

One module-scoped output folder: later compiles reuse the trained stages from
the stage cache, which is itself under test here.
"""

import json
import subprocess

import numpy as np
import pytest

from slmc.load import load_config
from slmc.pipeline import compile_config

FAST = ["train.max_steps=40", "train.batch_size=8", "train.seq_len=64", "train.eval_every=20",
        "train.save_every=20", "train.warmup_steps=5", "export.max_seq_len=128", "generation.max_new_tokens=32"]
PROMPTS = ["def add(a, b):", "import os\n", "class Foo", "    return"]


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("generated")


def compile_run(out_dir, *overrides):
    summary = compile_config(load_config([*FAST, f"out_dir={out_dir}", *overrides]))
    return summary


@pytest.fixture(scope="module")
def fp32_run(out_dir):
    return compile_run(out_dir)


def _bundle(summary):
    assert summary.bundle == summary.run_dir / "bundle"
    return summary.bundle


def test_run_folder_has_the_generated_files_and_a_trained_checkpoint(fp32_run):
    run = fp32_run.run_dir
    for name in ("config.yaml", "plan.json", "train.py", "metrics.jsonl", "checkpoint/model.safetensors",
                 "checkpoint/config.json", "checkpoint/tokenizer.json", "bundle/manifest.json"):
        assert (run / name).is_file(), name
    train = fp32_run.stages["train"]
    assert train.last_loss < train.first_loss - 0.5
    log = (run / "compile.log").read_text()  # what the console showed, then the stage timings
    assert "stage train done in" in log and "stage package done in" in log
    timings = log.split("stage timings (seconds")[1]
    assert [line.split()[0] for line in timings.splitlines()[1:]][:4] == ["data", "tokenizer", "tokenize", "train"]


def test_fp32_bundle_greedy_tokens_equal_pytorch(fp32_run):
    import torch
    from transformers import AutoModelForCausalLM

    from slmc.runtime import load_bundle

    bundle = load_bundle(_bundle(fp32_run))
    model = AutoModelForCausalLM.from_pretrained(_bundle(fp32_run).parent / "checkpoint").eval()
    for prompt in PROMPTS:
        prompt_ids = bundle.encode(prompt)
        ours = bundle.generate_ids(prompt, max_new_tokens=12, ignore_eos=True)[0]
        with torch.no_grad():
            ref = model.generate(torch.tensor([prompt_ids]), max_new_tokens=12, do_sample=False,
                                 min_new_tokens=12)[0, len(prompt_ids):].tolist()
        assert ours == ref, prompt


def test_manifest_records_parity_and_perplexity(fp32_run):
    manifest = json.loads((_bundle(fp32_run) / "manifest.json").read_text())
    parity = manifest["metrics"]["parity"]  # the shipped (fused) graph against the fp32 checkpoint
    assert parity["ok"] and parity["greedy_identical"] and max(parity["cases"].values()) < 1e-3
    assert parity["stage"] == "optimize" and parity["precision"] == "fp32" and parity["top1_agreement"] == 1.0
    assert manifest["metrics"]["export_parity"] == fp32_run.stages["export"].parity
    ppl = manifest["metrics"]["heldout_perplexity"]
    assert parity["heldout_perplexity"] == ppl["optimize"]
    assert abs(ppl["export"] / ppl["checkpoint"] - 1) < 1e-3


@pytest.mark.parametrize("precision, quantized_ops", [
    ("int8", {"MatMulInteger", "MatMulIntegerToFloat"}),  # ORT's fusion turns the first into the second
    ("int4", {"MatMulNBits"}),
])
def test_compressed_bundles_reuse_training_and_pass_the_gate(out_dir, fp32_run, precision, quantized_ops, capsys):
    import onnx

    summary = compile_run(out_dir, f"compress={precision}")
    assert summary.stages["train"].cached and summary.stages["export"].cached
    assert "reused from the stage cache" in capsys.readouterr().out
    manifest = json.loads((_bundle(summary) / "manifest.json").read_text())
    ppl = manifest["metrics"]["heldout_perplexity"]
    assert ppl["compress"] / ppl["export"] - 1 <= load_config([f"compress={precision}"]).compress.max_ppl_increase
    ops = {n.op_type for n in onnx.load(_bundle(summary) / "model.onnx", load_external_data=False).graph.node}
    assert ops & quantized_ops, ops
    # the manifest describes the quantized graph it ships; the fp32 export's exact check is kept apart
    shipped, export = manifest["metrics"]["parity"], manifest["metrics"]["export_parity"]
    assert export == summary.stages["export"].parity and export["greedy_identical"]
    assert shipped["stage"] == "compress" and shipped["precision"] == precision
    assert shipped["heldout_perplexity"] == ppl["compress"] and shipped["greedy"]["tokens"] == 64
    assert shipped["max_abs_logit_diff"] > 0 and not shipped["ok"]  # quantized weights: not exact parity
    assert summary.stages["package"].bytes < fp32_run.stages["package"].bytes
    if precision == "int4":  # block_size=auto on device=cpu: candidates 128, 64, 32, one kept
        trials = summary.stages["compress"].block_size_trials
        kept = [t["block_size"] for t in trials if t["kept"]]
        assert trials[0]["block_size"] == 32 and len(kept) == 1
        assert manifest["metrics"]["compress"]["block_size"] == kept[0]
        reference = trials[0]["heldout_ppl"]
        assert ppl["compress"] == next(t["heldout_ppl"] for t in trials if t["kept"])
        assert ppl["compress"] <= reference * 1.01 or kept == [32]
        blocks = {a.i for n in onnx.load(_bundle(summary) / "model.onnx", load_external_data=False).graph.node
                  if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "block_size"}
        assert blocks == set(kept)


def test_perplexity_gate_fails_the_compile_with_the_numbers(out_dir, fp32_run):
    from slmc.errors import StageError

    with pytest.raises(StageError) as err:
        compile_run(out_dir, "compress=int4", "compress.max_ppl_increase=0", "compress.block_size=128",
                    "compress.symmetric=false")
    text = err.value.render()
    assert "compress.max_ppl_increase" in text and "->" in text


def test_ort_genai_loads_the_bundle_and_matches_slmc_run(fp32_run):
    og = pytest.importorskip("onnxruntime_genai")
    from slmc.runtime import load_bundle

    bundle = load_bundle(_bundle(fp32_run))
    model = og.Model(str(_bundle(fp32_run)))
    tokenizer = og.Tokenizer(model)
    for prompt in PROMPTS[:2]:
        ours = bundle.generate_ids(prompt, max_new_tokens=10, ignore_eos=True)[0]
        prompt_ids = tokenizer.encode(prompt)
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(prompt_ids) + 10, do_sample=False, min_length=len(prompt_ids) + 10)
        gen = og.Generator(model, params)
        gen.append_tokens(np.asarray(prompt_ids, dtype=np.int32)[None])
        while not gen.is_done():
            gen.generate_next_token()
        assert list(gen.get_sequence(0))[len(prompt_ids):] == ours, prompt


def test_tensorrt_bundle_for_jetson_carries_a_checked_build_script(out_dir, fp32_run):
    from slmc.runtime import verify_bundle
    from slmc.runtime.errors import BundleError

    summary = compile_run(out_dir, "device=jetson_orin_nano", "runtime=tensorrt", "compress=fp16")
    bundle = _bundle(summary)
    names = {p.name for p in bundle.iterdir()}
    assert {"build_engine.sh", "build_engine.py", "model.onnx", "manifest.json"} <= names
    assert "genai_config.json" not in names
    subprocess.run(["bash", "-n", str(bundle / "build_engine.sh")], check=True)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["runtime"] == {**manifest["runtime"], "name": "tensorrt", "version": "10.3"}
    assert "--fp16" in (bundle / "build_engine.sh").read_text()
    with pytest.raises(BundleError):
        verify_bundle(bundle)  # an engine must be built on the device first
    verify_bundle(bundle, allow_foreign=True)


def test_prune_then_recover_from_the_trained_checkpoint(out_dir, fp32_run):
    checkpoint = fp32_run.run_dir / "checkpoint"
    summary = compile_run(out_dir, "init=prune", f"init.path={checkpoint}", "init.prune.layer_ratio=0.5",
                          "init.prune.mlp_ratio=0.5", "train=finetune", "train.max_steps=10")
    prune = summary.stages["prune"]
    assert prune.params_after < prune.params_before and len(prune.kept_layers) == 2
    config = json.loads((summary.run_dir / "checkpoint" / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["intermediate_size"] == 192
    assert (_bundle(summary) / "manifest.json").is_file()


def test_distill_a_smaller_student_from_the_trained_teacher(out_dir, fp32_run, capfd):
    """Compiled through the Python API, which is quiet: nothing on stdout, train.py's output in train.log."""
    import slmc
    from slmc.stages.results import ExportResult, TrainResult

    teacher = fp32_run.run_dir / "checkpoint"
    capfd.readouterr()
    summary = slmc.compile(overrides=[*FAST, f"out_dir={out_dir}", "init=distill",
                                      f"init.distill.teacher_path={teacher}", "model.num_hidden_layers=2",
                                      "train.max_steps=15"])
    assert capfd.readouterr().out == ""
    run = summary.run_dir
    assert "step" in (run / "train.log").read_text()  # train.py's own log lines
    assert "a quiet compile" in (run / "compile.log").read_text()
    assert isinstance(summary.stages["train"], TrainResult) and isinstance(summary.stages["export"], ExportResult)
    assert summary.stages.model == "work/optimize/model.onnx" and summary.stages["export"].parity["ok"]
    assert all(r.seconds is not None and r.seconds >= 0 for r in summary.stages.values())
    # the student shares the teacher's tokenizer, byte for byte
    assert (run / "tokenizer/tokenizer.json").read_bytes() == (teacher / "tokenizer.json").read_bytes()
    assert json.loads((run / "checkpoint/config.json").read_text())["num_hidden_layers"] == 2
    assert (_bundle(summary) / "manifest.json").is_file()


def test_lora_bundle_is_the_merged_model(out_dir, fp32_run):
    from safetensors.numpy import load_file

    base = fp32_run.run_dir / "checkpoint"
    summary = compile_run(out_dir, "init=pretrained", f"init.path={base}", "train=lora", "train.max_steps=10",
                          "train.lr=0.01")
    merged = load_file(summary.run_dir / "checkpoint/model.safetensors")
    original = load_file(base / "model.safetensors")
    assert set(merged) == set(original)  # plain weights, no adapter tensors left
    changed = {k for k in merged if not np.array_equal(merged[k], original[k])}
    assert changed and all(any(t in k for t in ("q_proj", "k_proj", "v_proj", "o_proj")) for k in changed)
    parity = json.loads((_bundle(summary) / "manifest.json").read_text())["metrics"]["parity"]
    assert parity["ok"] and parity["greedy_identical"]  # the bundle equals an export of the merged model
