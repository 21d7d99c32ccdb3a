"""draft.method inside one `slmc compile`: the draft is compiled as a run inside the target's run and
shipped in the bundle, where slmc.runtime and ONNX Runtime GenAI both decode speculatively with it."""

from __future__ import annotations

import json

import pytest

from slmc.load import load_config
from slmc.pipeline import compile_config
from slmc.runtime import load_bundle

FAST = ["train.max_steps=30", "train.batch_size=8", "train.seq_len=64", "train.eval_every=30", "train.save_every=30",
        "train.warmup_steps=3", "export.max_seq_len=96", "generation.max_new_tokens=16", "data.max_chars=200000",
        "eval.tasks=[]"]
PROMPT = "def add(a, b):\n    return"


def compile_run(out_dir, *overrides):
    return compile_config(load_config([*FAST, f"out_dir={out_dir}", *overrides]), quiet=True)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("draft")


@pytest.fixture(scope="module")
def pruned(out_dir):
    """The tiny target (4 layers) with a draft pruned to 2 of its layers, no recovery training."""
    return compile_run(out_dir, "draft.method=prune")


def test_the_bundle_ships_the_draft_compiled_inside_the_run(pruned):
    draft = pruned.stages["draft"]
    assert (draft.method, draft.num_hidden_layers, draft.target_num_hidden_layers) == ("prune", 2, 4)
    run = pruned.run_dir
    assert (run / "draft" / "bundle" / "manifest.json").is_file()         # the draft's own run
    assert (run / "draft" / "compile.log").is_file()
    manifest = json.loads((pruned.bundle / "manifest.json").read_text())
    section = manifest["draft"]
    assert section["files"]["model"] == "draft/model.onnx" and "draft/model.onnx" in manifest["hashes"]
    assert section["model"]["num_hidden_layers"] == 2 and manifest["model"]["num_hidden_layers"] == 4
    assert section["model"]["parameters"] < manifest["model"]["parameters"]
    genai = json.loads((pruned.bundle / "genai_config.json").read_text())
    assert genai["model"]["draft"]["filename"] == "draft/model.onnx"
    assert genai["speculative"] == {"max_draft_tokens": 4}
    assert "draft" in (run / "report.md").read_text()
    readme = (pruned.bundle / "README.md").read_text()
    assert "`draft/model.onnx`" in readme and "--speculative=draft" in readme and "2 of its 4 layers" in readme
    assert [s["name"] for s in json.loads((run / "plan.json").read_text())["stages"]].index("draft") < \
        [s["name"] for s in json.loads((run / "plan.json").read_text())["stages"]].index("package")


def test_the_runtime_decodes_with_the_draft_and_keeps_greedy_tokens(pruned):
    bundle = load_bundle(pruned.bundle, threads=1)
    assert bundle.draft is not None
    plain = bundle.generate_ids(PROMPT, max_new_tokens=24, speculative="off")
    assert bundle.generate_ids(PROMPT, max_new_tokens=24, speculative="draft") == plain


def test_ort_genai_decodes_speculatively_with_the_bundles_draft(pruned):
    og = pytest.importorskip("onnxruntime_genai")
    bundle = load_bundle(pruned.bundle, threads=1)
    ids = bundle.encode(PROMPT)
    plain = bundle.generate_ids(PROMPT, max_new_tokens=12, speculative="off")[0]
    model = og.Model(str(pruned.bundle))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 12, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens([ids])
    while not generator.is_done():
        generator.generate_next_token()
    produced = [int(t) for t in generator.get_sequence(0)[len(ids):]]
    assert produced == plain[:len(produced)] and len(produced) >= 1
    stats = generator.get_speculative_stats()
    assert stats["draft_forward_passes"] > 0  # GenAI really used the draft decoder


def test_a_recompile_restores_the_draft_from_the_stage_cache(out_dir, pruned):
    again = compile_run(out_dir, "draft.method=prune")
    inner = (again.run_dir / "draft" / "compile.log").read_text()
    assert "cache" in inner.split("stage timings (seconds")[1]  # the draft run's stages came from the cache
    assert json.loads((again.bundle / "manifest.json").read_text())["hashes"]["draft/model.onnx"] == \
        json.loads((pruned.bundle / "manifest.json").read_text())["hashes"]["draft/model.onnx"]


def test_a_distilled_draft_is_trained_with_the_target_as_teacher(out_dir, pruned):
    run = compile_run(out_dir, "draft.method=distill", "draft.train_steps=6", "draft.num_hidden_layers=1")
    assert run.stages["draft"].num_hidden_layers == 1
    child = (run.run_dir / "draft" / "config.yaml").read_text()
    assert "kind: distill" in child and str((run.run_dir / "checkpoint").resolve()) in child
    metrics = [json.loads(line) for line in (run.run_dir / "draft" / "metrics.jsonl").read_text().splitlines()]
    assert any(m.get("step") == 6 for m in metrics)  # the student was trained for draft.train_steps
    bundle = load_bundle(run.bundle, threads=1)
    assert bundle.generate_ids(PROMPT, max_new_tokens=16, speculative="draft") == \
        bundle.generate_ids(PROMPT, max_new_tokens=16, speculative="off")
