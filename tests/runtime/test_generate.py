"""The decode loop against transformers, plus stops, limits, streaming and threads."""

from __future__ import annotations

import threading

import pytest
import torch

from slmc.runtime import GenerationError, GenerationWarning, load_bundle

PROMPTS = ["the small model runs", "ka", "zé lo mi ne ru sa to vi the device with a cache", "ön quar."]


def hf_greedy(model, rows: list[list[int]], new: int) -> list[list[int]]:
    """transformers generate(do_sample=False) with left padding, tokens after the prompt, cut at eos."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=new,
                             eos_token_id=2, pad_token_id=0)[:, width:].tolist()
    return [r[: r.index(2) + 1] if 2 in r else r for r in out]


@pytest.mark.parametrize("loop", ["numpy", "iobinding"])
def test_greedy_matches_transformers(bundle, hf_model, loop, monkeypatch):
    monkeypatch.setattr(bundle, "loop", loop)
    for prompt in PROMPTS:
        ids = bundle.encode(prompt)
        assert bundle.generate_ids(prompt, max_new_tokens=24) == hf_greedy(hf_model, [ids], 24), prompt


@pytest.mark.parametrize("loop", ["numpy", "iobinding"])
def test_left_padded_batch_matches_transformers(bundle, hf_model, loop, monkeypatch):
    monkeypatch.setattr(bundle, "loop", loop)
    prompts = [PROMPTS[2], PROMPTS[1]]  # 15 vs 1 tokens: heavy left padding
    rows = [bundle.encode(p) for p in prompts]
    assert len(rows[0]) != len(rows[1])
    assert bundle.generate_ids(prompts, max_new_tokens=24) == hf_greedy(hf_model, rows, 24)


def test_batch_larger_than_max_batch_size_is_chunked(bundle):
    prompts = PROMPTS + ["the cache"]  # 5 prompts, max_batch_size 4
    together = bundle.generate(prompts, max_new_tokens=8)
    assert together == [bundle.generate(p, max_new_tokens=8)[0] for p in prompts]


def test_sampling_is_reproducible_with_a_seed_and_seeds_differ(bundle):
    a = bundle.generate_ids(PROMPTS[:2], temperature=1.0, seed=7, max_new_tokens=20)
    b = bundle.generate_ids(PROMPTS[:2], temperature=1.0, seed=7, max_new_tokens=20)
    c = bundle.generate_ids(PROMPTS[:2], temperature=1.0, seed=8, max_new_tokens=20)
    assert a == b
    assert a != c
    assert a != bundle.generate_ids(PROMPTS[:2], max_new_tokens=20)  # not greedy


@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.9, "top_k": 40, "top_p": 0.9, "seed": 3},
                                      {"repetition_penalty": 1.3}])
def test_streaming_concatenation_equals_generate(bundle, sampling):
    for prompt in PROMPTS:
        pieces = list(bundle.stream(prompt, max_new_tokens=40, **sampling))
        assert "".join(pieces) == bundle.generate(prompt, max_new_tokens=40, **sampling)[0]
        assert all(pieces) and len(pieces) > 1


def test_stop_token_id_ends_generation(bundle):
    ids = bundle.generate_ids(PROMPTS[0], max_new_tokens=24)[0]
    stop_at = next(i for i, t in enumerate(ids) if i >= 3 and t not in ids[:i])
    [done] = bundle.complete(PROMPTS[0], max_new_tokens=24, stop_token_ids=[ids[stop_at]])
    assert done.token_ids == ids[: stop_at + 1]
    assert done.finish_reason == "stop"
    assert done.text == bundle.tokenizer.decode(ids[:stop_at])


def test_eos_ends_generation_unless_ignored(bundle, rewrite_manifest, bundle_copy):
    ids = bundle.generate_ids(PROMPTS[0], max_new_tokens=24)[0]
    eos = ids[6] if ids[6] not in ids[:6] else next(t for i, t in enumerate(ids) if t not in ids[:i] and i > 2)
    rewrite_manifest(bundle_copy, lambda m: m["tokens"].update(eos_token_ids=[eos]))
    other = load_bundle(bundle_copy, threads=1)
    stopped = other.generate_ids(PROMPTS[0], max_new_tokens=24)[0]
    assert stopped == ids[: ids.index(eos) + 1]
    assert other.generate_ids(PROMPTS[0], max_new_tokens=24, ignore_eos=True)[0] == ids


def test_stop_string_cuts_text_and_stream_holds_it_back(bundle):
    full = bundle.generate(PROMPTS[0], max_new_tokens=40)[0]
    stop = full[len(full) // 2: len(full) // 2 + 3]
    expected = full[: full.find(stop)]
    [done] = bundle.complete(PROMPTS[0], max_new_tokens=40, stop=[stop])
    assert done.text == expected and done.finish_reason == "stop"
    assert len(done.token_ids) < 40
    assert "".join(bundle.stream(PROMPTS[0], max_new_tokens=40, stop=[stop])) == expected
    assert bundle.generate(PROMPTS[0], max_new_tokens=40, stop=["\x00never"])[0] == full


def test_max_new_tokens_beyond_context_is_clipped_with_a_warning(bundle):
    ids = bundle.encode(" ".join(["the small model"] * 80))[: bundle.context - 5]
    with pytest.warns(GenerationWarning, match="clipped to 5"):
        generation = bundle.start([ids], bundle.params(max_new_tokens=20, ignore_eos=True))
    list(generation)
    assert len(generation.completions[0].token_ids) == 5
    assert generation.completions[0].finish_reason == "length"


def test_long_prompt_is_truncated_from_the_left_with_a_warning(bundle):
    ids = bundle.encode(" ".join(["the small model runs on the device"] * 40))
    assert len(ids) > bundle.context
    with pytest.warns(GenerationWarning) as caught:
        generation = bundle.start([ids], bundle.params(max_new_tokens=4))
        list(generation)
    messages = [str(w.message) for w in caught]
    assert any("kept its last 159" in m for m in messages)
    assert any("clipped to 1" in m for m in messages)
    [done] = generation.completions
    assert done.prompt_ids == ids[-(bundle.context - 1):]
    assert len(done.token_ids) == 1


def test_empty_prompt_starts_from_bos(bundle):
    generation = bundle.start([[1]], bundle.params(max_new_tokens=8))
    list(generation)
    assert bundle.generate_ids("", max_new_tokens=8) == [generation.completions[0].token_ids]


def test_empty_prompt_without_bos_is_an_error(bundle_copy, rewrite_manifest):
    rewrite_manifest(bundle_copy, lambda m: m["tokens"].update(bos_token_id=None))
    with pytest.raises(GenerationError, match="prompt is empty"):
        load_bundle(bundle_copy, threads=1).generate("")


def test_emoji_prompt_generates(bundle):
    ids = bundle.encode("café 🙂 ön")
    assert bundle.tokenizer.decode(ids) == "café 🙂 ön"
    text = "".join(bundle.stream("café 🙂 ön", max_new_tokens=30, temperature=1.0, seed=0))
    assert text == bundle.generate("café 🙂 ön", max_new_tokens=30, temperature=1.0, seed=0)[0]


@pytest.mark.parametrize("bad", [{"temperature": -0.1}, {"top_p": 0.0}, {"top_p": 1.5}, {"top_k": -1},
                                 {"repetition_penalty": 0.0}, {"max_new_tokens": 0}, {"nucleus": 0.9}])
def test_bad_sampling_parameters_are_refused(bundle, bad):
    name = next(iter(bad))
    with pytest.raises(GenerationError, match=name):
        bundle.generate("ka", **bad)


def test_four_threads_share_one_bundle(bundle):
    requests = [(p, {"temperature": 0.8, "seed": i} if i % 2 else {}) for i, p in enumerate(PROMPTS * 2)]
    expected = [bundle.generate(p, max_new_tokens=30, **s)[0] for p, s in requests]
    results: dict[int, str] = {}

    def work(worker: int) -> None:
        for index in range(worker, len(requests), 4):
            prompt, sampling = requests[index]
            results[index] = bundle.generate(prompt, max_new_tokens=30, **sampling)[0]

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(len(requests))] == expected


@pytest.mark.parametrize("loop", ["numpy", "iobinding"])
def test_fp16_bundle_runs_with_an_fp16_cache(bundle, bundle_copy, rewrite_manifest, loop):
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    path = bundle_copy / "model.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(path)), keep_io_types=False), str(path))
    rewrite_manifest(bundle_copy, lambda m: (m["kv_cache"].update(dtype="float16"), m.update(precision="fp16")))
    half = load_bundle(bundle_copy, threads=1, loop=loop)
    assert half.session.get_inputs()[3].type == "tensor(float16)"
    for prompt in PROMPTS[:2]:
        assert half.generate_ids(prompt, max_new_tokens=12) == bundle.generate_ids(prompt, max_new_tokens=12)


def test_ort_failure_while_running_is_a_bundle_error(bundle_copy, rewrite_manifest):
    from slmc.runtime import BundleError

    rewrite_manifest(bundle_copy, lambda m: m["kv_cache"].update(head_dim=8))  # wrong cache shape
    broken = load_bundle(bundle_copy, threads=1)
    with pytest.raises(BundleError, match="ONNX Runtime failed while running the model"):
        broken.generate("ka", max_new_tokens=2)


def test_a_generation_runs_once(bundle):
    generation = bundle.start([bundle.encode("ka")], bundle.params(max_new_tokens=2))
    list(generation)
    with pytest.raises(GenerationError, match="runs once"):
        list(generation)


# ----------------------------------------------------------------------------- a graph without a bundle
# How the compiler runs the models it builds (parity, perplexity, graph checks): the same loops.


def test_a_decoder_reads_from_its_graph_what_the_manifest_says(bundle, bundle_dir):
    from slmc.runtime.stepper import Decoder

    decoder = Decoder.open(bundle_dir / "model.onnx")
    assert decoder.kv == bundle.manifest.kv and decoder.vocab == bundle.vocab_size


@pytest.mark.parametrize("loop", ["numpy", "iobinding"])
def test_greedy_ids_is_generate_without_a_tokenizer(bundle, bundle_dir, loop):
    from slmc.runtime.generate import greedy_ids
    from slmc.runtime.stepper import Decoder

    decoder = Decoder.open(bundle_dir / "model.onnx")
    for prompt in PROMPTS:
        expected = bundle.generate_ids(prompt, max_new_tokens=16)[0]
        assert greedy_ids(decoder, bundle.encode(prompt), 16, eos_token_ids=[2], loop=loop) == expected, prompt


def test_stepper_logits_cover_every_position_and_a_cache_can_be_handed_over(bundle_dir):
    import numpy as np

    from slmc.runtime.stepper import Decoder

    decoder = Decoder.open(bundle_dir / "model.onnx")
    ids, mask, positions = np.array([[5, 9, 17, 3]]), np.ones((1, 4), np.int64), np.arange(4)[None]
    full = decoder.stepper(1, loop="numpy").logits(ids, mask, positions)
    assert full.shape == (1, 4, decoder.vocab) and full.dtype == np.float32
    assert np.array_equal(decoder.stepper(1, loop="iobinding")(ids, mask, positions), full[:, -1])
    first = decoder.stepper(1, loop="numpy")
    first.logits(ids[:, :3], mask[:, :3], positions[:, :3])
    resumed = decoder.stepper(1, past=first.past)  # what the compiler's graph checks start from
    np.testing.assert_allclose(resumed.logits(ids[:, 3:], mask, positions[:, 3:]), full[:, 3:], atol=1e-5)


def test_text_without_a_tokenizer_is_refused(bundle):
    from slmc.runtime.generate import Generation

    params = bundle.params(max_new_tokens=2, stop=["ka"])
    with pytest.raises(GenerationError, match="tokenizer"):
        Generation(bundle.session, bundle.manifest.kv, None, bundle.manifest.tokens, [[5, 6]], params,
                   vocab_size=bundle.vocab_size)


def test_a_graph_without_a_kv_cache_is_not_a_decoder(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from slmc.runtime import BundleError
    from slmc.runtime.stepper import Decoder

    graph = helper.make_graph([helper.make_node("Identity", ["input_ids"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
                              [helper.make_tensor_value_info("logits", TensorProto.INT64, ["b", "s"])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "m.onnx"))
    with pytest.raises(BundleError, match="0 past and 0 present"):
        Decoder.open(tmp_path / "m.onnx")
