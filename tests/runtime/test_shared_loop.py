"""The shared-KV-buffer loop on a bundle whose graph slmc fused for ONNX Runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from slmc.runtime import BundleError, load_bundle
from slmc.runtime.manifest import MANIFEST_NAME
from slmc.runtime.stepper import SharedStepper, resolve_loop

from tests.fixtures.bundle import write_manifest
from .test_generate import PROMPTS, hf_greedy


@pytest.fixture(scope="module")
def fused_dir(bundle_dir, tmp_path_factory) -> Path:
    """The fixture bundle with its model optimized at level "all" and the manifest re-hashed."""
    from slmc.export.optimize import optimize_for_ort

    folder = Path(shutil.copytree(bundle_dir, tmp_path_factory.mktemp("fused") / "bundle"))
    data = json.loads((folder / MANIFEST_NAME).read_text())
    optimize_for_ort(bundle_dir / "model.onnx", folder / "model.onnx", num_heads=0, hidden_size=0,
                     model_info=data["model"])
    data.pop("hashes")
    write_manifest(folder, data)
    return folder


@pytest.fixture(scope="module")
def fused(fused_dir):
    return load_bundle(fused_dir, threads=1)


def test_auto_picks_the_shared_loop_for_fused_graphs_only(fused, bundle):
    assert resolve_loop(fused.session, "auto") == "shared"
    assert resolve_loop(bundle.session, "auto") == "numpy"
    generation = fused.start([fused.encode("ka")], fused.params(max_new_tokens=3))
    assert isinstance(generation.stepper, SharedStepper) and generation.stepper.capacity == 1 + 3


@pytest.mark.parametrize("loop", ["auto", "numpy"])
def test_fused_greedy_matches_transformers(fused, hf_model, loop, monkeypatch):
    monkeypatch.setattr(fused, "loop", loop)
    for prompt in PROMPTS:
        ids = fused.encode(prompt)
        assert fused.generate_ids(prompt, max_new_tokens=24) == hf_greedy(hf_model, [ids], 24), prompt


def test_fused_left_padded_batch_matches_transformers(fused, hf_model):
    prompts = [PROMPTS[2], PROMPTS[1]]  # 15 vs 1 tokens: heavy left padding
    rows = [fused.encode(p) for p in prompts]
    assert fused.generate_ids(prompts, max_new_tokens=24) == hf_greedy(hf_model, rows, 24)


def test_shared_loop_matches_numpy_loop_logits(fused):
    kv, session = fused.manifest.kv, fused.session
    from slmc.runtime.stepper import NumpyStepper

    ids = np.array([[5, 9, 17, 3]], np.int64)
    shared, plain = SharedStepper(session, kv, 1, capacity=6), NumpyStepper(session, kv, 1)
    mask = np.ones((1, 6), np.int64)
    for step_ids, width, positions in ((ids, 4, np.arange(4)[None]), (np.array([[11]]), 5, np.array([[4]])),
                                       (np.array([[2]]), 6, np.array([[5]]))):
        a = shared(step_ids, mask[:, :width], positions)
        b = plain(step_ids, mask[:, :width], positions)
        assert np.max(np.abs(a - b)) < 1e-5


def test_compiler_checks_decode_fused_graphs_with_the_shared_loop(fused_dir, fused, hf_model):
    """Decoder.open + greedy_ids (what the compiler's parity and perplexity run) pick the shared loop."""
    from slmc.runtime.generate import greedy_ids
    from slmc.runtime.stepper import Decoder

    decoder = Decoder.open(fused_dir / "model.onnx", threads=1)
    assert isinstance(decoder.stepper(1, capacity=8), SharedStepper)
    ids = fused.encode(PROMPTS[0])
    assert greedy_ids(decoder, ids, 24, eos_token_ids=[2]) == hf_greedy(hf_model, [ids], 24)[0]


def test_shared_loop_on_an_unfused_graph_is_refused(bundle_dir):
    plain = load_bundle(bundle_dir, threads=1, loop="shared")
    with pytest.raises(BundleError, match="shared"):
        plain.generate("ka", max_new_tokens=2)


def test_running_past_the_buffer_is_a_bundle_error(fused):
    stepper = SharedStepper(fused.session, fused.manifest.kv, 1, capacity=3)
    stepper(np.array([[4, 5]]), np.ones((1, 2), np.int64), np.array([[0, 1]]))
    with pytest.raises(BundleError, match="KV buffer"):
        stepper(np.array([[6, 7]]), np.ones((1, 4), np.int64), np.array([[2, 3]]))
