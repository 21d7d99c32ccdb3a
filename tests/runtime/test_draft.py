"""Speculative decoding with a draft decoder in the bundle (manifest `draft` section)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from slmc.runtime import BundleError, load_bundle
from slmc.runtime.draft import DraftModel
from slmc.runtime.speculative import SpeculativeGeneration

from .test_generate import PROMPTS
from .test_speculative import REPETITIVE, run_ids


def add_draft(folder: Path, rewrite_manifest, noise: float = 0.0, seed: int = 0) -> Path:
    """Ship the bundle's own model as its draft, its weights perturbed by `noise` (relative):
    0 gives a draft that always agrees with the target, more gives rejections."""
    import onnx
    from onnx import numpy_helper

    (folder / "draft").mkdir()
    model = onnx.load(str(folder / "model.onnx"))
    rng = np.random.default_rng(seed)
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if noise and array.dtype == np.float32 and array.ndim == 2:
            array = array + rng.normal(0, noise * float(array.std()), array.shape).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    onnx.save(model, str(folder / "draft" / "model.onnx"))

    def edit(data):
        data["draft"] = {"files": {"model": "draft/model.onnx"}, "model": data["model"], "io": data["io"],
                         "kv_cache": data["kv_cache"]}

    return rewrite_manifest(folder, edit)


@pytest.fixture
def same_draft(bundle_copy, rewrite_manifest):
    return load_bundle(add_draft(bundle_copy, rewrite_manifest), threads=1)


@pytest.fixture
def noisy_draft(bundle_dir, tmp_path, rewrite_manifest):
    folder = Path(shutil.copytree(bundle_dir, tmp_path / "noisy"))
    return load_bundle(add_draft(folder, rewrite_manifest, noise=0.6), threads=1)


def test_a_draft_identical_to_the_target_is_always_accepted(same_draft):
    for prompt in PROMPTS:
        ids = same_draft.encode(prompt)
        plain, _ = run_ids(same_draft, ids, "off", max_new_tokens=30, ignore_eos=True)
        fast, generation = run_ids(same_draft, ids, "draft", max_new_tokens=30, ignore_eos=True)
        assert fast.token_ids == plain.token_ids
        assert generation.accepted == generation.drafted > 0  # the draft's cache follows the text exactly
        assert generation.target_calls < 29 / 2


@pytest.mark.parametrize("loop", ["numpy", "iobinding"])
def test_a_different_draft_keeps_greedy_tokens(noisy_draft, loop, monkeypatch):
    monkeypatch.setattr(noisy_draft, "loop", loop)
    drafted = accepted = 0
    for prompt in [*PROMPTS, REPETITIVE]:
        ids = noisy_draft.encode(prompt)
        plain, _ = run_ids(noisy_draft, ids, "off", max_new_tokens=30)
        for new in (30, 7):
            fast, generation = run_ids(noisy_draft, ids, "draft", max_new_tokens=new)
            assert fast.token_ids == plain.token_ids[:new], (prompt, new)
            drafted, accepted = drafted + generation.drafted, accepted + generation.accepted
    assert 0 < accepted < drafted  # kept and rejected drafts: the draft cache was rolled back


def test_draft_sampling_is_reproducible(noisy_draft):
    kwargs = {"max_new_tokens": 20, "temperature": 0.8, "speculative": "draft"}
    assert noisy_draft.generate_ids(PROMPTS[0], seed=3, **kwargs) == noisy_draft.generate_ids(PROMPTS[0], seed=3,
                                                                                                 **kwargs)


def test_draft_model_cache_rolls_back_to_the_kept_drafts(same_draft):
    drafter = DraftModel(same_draft.draft, [5, 9, 17], capacity=20)
    first = drafter.propose(4)
    assert len(first) == 4 and drafter.fed == 3
    drafter.extend([first[0], 99])  # one draft kept, then the target's own token
    assert drafter.fed == 4 and drafter.tokens == [5, 9, 17, first[0], 99]
    again = drafter.propose(3)
    fresh = DraftModel(same_draft.draft, [5, 9, 17, first[0], 99], capacity=20).propose(3)
    assert again == fresh  # the same continuation as a draft that never saw the rejected tokens


def test_a_draft_with_another_vocabulary_is_refused(bundle_copy, rewrite_manifest):
    folder = add_draft(bundle_copy, rewrite_manifest)
    rewrite_manifest(folder, lambda data: data["draft"]["model"].update(vocab_size=123))
    with pytest.raises(BundleError, match="share the target's tokenizer"):
        load_bundle(folder)


def test_bench_reports_the_draft_mode(same_draft):
    from slmc.runtime.bench import bench

    spec = bench(same_draft, new_tokens=16, runs=1, warmup=0, speculative="draft", prompt=PROMPTS[0])["speculative"]
    assert spec["mode"] == "draft" and spec["acceptance_rate"] == 1.0 and spec["tokens_per_target_call"] > 2
    assert isinstance(same_draft.start([[5]], same_draft.params(), speculative="draft"), SpeculativeGeneration)
