"""Prompt-lookup speculative decoding on the fixture bundle: greedy tokens identical to plain
decoding on every loop, stops and limits inside a draft, and the request rules."""

from __future__ import annotations

import pytest

from slmc.runtime import GenerationError
from slmc.runtime.speculative import SpeculativeGeneration, next_draft_length, resolve_speculative
from slmc.runtime.stepper import SharedStepper

from .test_generate import PROMPTS
from .test_shared_loop import fused, fused_dir  # noqa: F401 - the fused bundle's fixtures

#: a prompt whose text repeats, so lookup has something to draft from (PROMPTS have little)
REPETITIVE = "the small model runs on the device. the small model runs on the device. the small model"


def run_ids(bundle, ids: list[int], speculative: str, **sampling):
    generation = bundle.start([ids], bundle.params(**sampling), speculative=speculative)
    for _ in generation:
        pass
    return generation.completions[0], generation


def echo_prompt(bundle, prompt: str, new: int) -> list[int]:
    """The prompt followed by the model's own greedy continuation and the prompt again: the
    target then meets text it will copy, so drafts are long and mostly right."""
    ids = bundle.encode(prompt)
    plain, _ = run_ids(bundle, ids, "off", max_new_tokens=new, ignore_eos=True)
    return ids + plain.token_ids + ids


@pytest.mark.parametrize("loop", ["numpy", "iobinding"])
@pytest.mark.parametrize("max_draft", [1, 3, 8])
def test_greedy_lookup_gives_the_tokens_of_plain_decoding(bundle, loop, max_draft, monkeypatch):
    monkeypatch.setattr(bundle, "loop", loop)
    monkeypatch.setattr("slmc.runtime.speculative.MAX_DRAFT", max_draft)
    drafted = accepted = 0
    for prompt in [*PROMPTS, REPETITIVE]:
        ids = echo_prompt(bundle, prompt, 20) if prompt != REPETITIVE else bundle.encode(prompt)
        plain, _ = run_ids(bundle, ids, "off", max_new_tokens=40)
        fast, generation = run_ids(bundle, ids, "lookup", max_new_tokens=40)
        assert isinstance(generation, SpeculativeGeneration) and generation.max_draft == max_draft
        assert fast.token_ids == plain.token_ids and fast.finish_reason == plain.finish_reason, prompt
        drafted, accepted = drafted + generation.drafted, accepted + generation.accepted
        assert generation.target_calls <= len(fast.token_ids) - 1
    assert accepted > 0 and drafted > accepted  # both branches ran: kept and rejected drafts


def test_each_call_gives_its_kept_drafts_and_one_more(bundle):
    ids = echo_prompt(bundle, PROMPTS[2], 30)
    fast, generation = run_ids(bundle, ids, "lookup", max_new_tokens=30, ignore_eos=True)
    assert len(fast.token_ids) == 30
    # every decode call gives its kept drafts plus one token of its own (but the last may end on a draft)
    assert generation.target_calls + generation.accepted in (29, 30)
    assert 5 < generation.accepted <= generation.drafted


@pytest.mark.parametrize("new", [1, 2, 3, 5, 9, 17])
def test_max_new_tokens_ends_inside_a_draft(bundle, new):
    ids = echo_prompt(bundle, PROMPTS[0], 24)
    plain, _ = run_ids(bundle, ids, "off", max_new_tokens=new, ignore_eos=True)
    fast, _ = run_ids(bundle, ids, "lookup", max_new_tokens=new, ignore_eos=True)
    assert fast.token_ids == plain.token_ids and len(fast.token_ids) == new


def test_a_stop_token_inside_a_draft_ends_the_row_there(bundle):
    ids = echo_prompt(bundle, PROMPTS[2], 24)
    plain, _ = run_ids(bundle, ids, "off", max_new_tokens=24, ignore_eos=True)
    for stop_at in (1, 4, 9):
        stop = plain.token_ids[stop_at]
        first = plain.token_ids.index(stop)
        want, _ = run_ids(bundle, ids, "off", max_new_tokens=24, stop_token_ids=[stop])
        got, _ = run_ids(bundle, ids, "lookup", max_new_tokens=24, stop_token_ids=[stop])
        assert got.token_ids == want.token_ids == plain.token_ids[:first + 1]
        assert got.finish_reason == "stop"


def test_stop_strings_and_streaming_match_plain_decoding(bundle):
    full = bundle.generate(REPETITIVE, max_new_tokens=40, speculative="off")[0]
    stop = full[len(full) // 2: len(full) // 2 + 3]
    for sampling in ({}, {"stop": [stop]}, {"repetition_penalty": 1.3}):
        want = bundle.generate(REPETITIVE, max_new_tokens=40, speculative="off", **sampling)[0]
        assert bundle.generate(REPETITIVE, max_new_tokens=40, speculative="lookup", **sampling)[0] == want
        assert "".join(bundle.stream(REPETITIVE, max_new_tokens=40, speculative="lookup", **sampling)) == want


def test_sampling_with_lookup_is_reproducible(bundle):
    kwargs = {"max_new_tokens": 30, "temperature": 0.8, "top_k": 20, "speculative": "lookup"}
    a = bundle.generate_ids(REPETITIVE, seed=5, **kwargs)
    assert a == bundle.generate_ids(REPETITIVE, seed=5, **kwargs)
    assert a != bundle.generate_ids(REPETITIVE, seed=6, **kwargs)


def test_lookup_with_several_prompts_runs_them_one_at_a_time(bundle):
    prompts = [REPETITIVE, PROMPTS[1], PROMPTS[2]]
    assert bundle.generate_ids(prompts, max_new_tokens=12, speculative="lookup") == \
        bundle.generate_ids(prompts, max_new_tokens=12, speculative="off")


def test_auto_means_lookup_for_greedy_single_prompts_only(bundle):
    greedy, sampled = bundle.params(), bundle.params(temperature=0.7)
    assert resolve_speculative("auto", greedy, 1) == "lookup"
    assert resolve_speculative("auto", greedy, 2) == "off"
    assert resolve_speculative("auto", sampled, 1) == "off"
    assert resolve_speculative("auto", greedy, 1, precision="int8") == "off"  # per-tensor activation scales
    assert resolve_speculative("lookup", greedy, 1, precision="int8") == "lookup"
    assert isinstance(bundle.start([[5, 6]], greedy, speculative="auto"), SpeculativeGeneration)
    assert not isinstance(bundle.start([[5, 6], [7]], greedy, speculative="auto"), SpeculativeGeneration)
    assert not isinstance(bundle.start([[5, 6]], greedy), SpeculativeGeneration)  # start's default: off


def test_bad_requests_are_refused(bundle):
    with pytest.raises(GenerationError, match="speculative must be one of"):
        bundle.generate("ka", speculative="ngram")
    with pytest.raises(GenerationError, match="needs a bundle with a draft model"):
        bundle.generate("ka", speculative="draft")
    with pytest.raises(GenerationError, match="one prompt at a time"):
        bundle.start([[5], [6]], bundle.params(), speculative="lookup")


def test_draft_length_schedule():
    assert next_draft_length(4, 4, 4, cap=8) == 6  # all kept: longer
    assert next_draft_length(7, 7, 7, cap=8) == 8
    assert next_draft_length(4, 4, 2, cap=8) == 3  # a rejection: shorter
    assert next_draft_length(1, 1, 0, cap=8) == 1
    assert next_draft_length(5, 0, 0, cap=8) == 5  # nothing drafted: unchanged


def test_greedy_lookup_on_the_shared_buffer_loop(fused):
    """A fused graph: GroupQueryAttention appends several new tokens into the shared buffer, and
    a rollback is only a shorter mask next call (stale positions are overwritten)."""
    drafted = accepted = 0
    for prompt in [REPETITIVE, PROMPTS[0], PROMPTS[2]]:
        ids = echo_prompt(fused, prompt, 20) if prompt != REPETITIVE else fused.encode(prompt)
        plain, _ = run_ids(fused, ids, "off", max_new_tokens=40)
        fast, generation = run_ids(fused, ids, "lookup", max_new_tokens=40)
        assert isinstance(generation.stepper, SharedStepper)
        assert fast.token_ids == plain.token_ids, prompt
        drafted, accepted = drafted + generation.drafted, accepted + generation.accepted
    assert accepted > 0 and drafted > accepted


def test_bench_reports_acceptance_tokens_per_call_and_speedup(bundle):
    from slmc.runtime.bench import bench

    result = bench(bundle, new_tokens=24, runs=2, warmup=0, speculative="lookup", prompt=REPETITIVE)
    spec = result["speculative"]
    assert result["prompt_tokens"] == len(bundle.encode(REPETITIVE))
    assert spec["mode"] == "lookup" and len(spec["runs_detail"]) == 2
    drafted = sum(r["drafted"] for r in spec["runs_detail"])
    accepted = sum(r["accepted"] for r in spec["runs_detail"])
    assert spec["acceptance_rate"] == round(accepted / drafted, 4)
    calls = sum(r["target_calls"] for r in spec["runs_detail"])
    assert spec["tokens_per_target_call"] == round(2 * 23 / calls, 3) and spec["tokens_per_target_call"] >= 1
    assert spec["speedup"] == round(spec["decode_tokens_per_s"] / spec["plain_decode_tokens_per_s"], 3)
    assert "speculative" not in bench(bundle, new_tokens=4, runs=1, warmup=0)
    with pytest.raises(GenerationError, match="one prompt at a time"):
        bench(bundle, new_tokens=4, runs=1, batch=2, speculative="lookup")


def test_cli_run_and_bench_take_speculative(bundle_dir, capsys):
    import json

    from slmc.runtime.cli import main

    outputs = []
    for mode in ("off", "lookup", "auto"):
        assert main(["run", str(bundle_dir), "--prompt", REPETITIVE, "--max-new-tokens", "20",
                     "--speculative", mode, "--threads", "1"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] == outputs[2] and outputs[0].strip()
    assert main(["bench", str(bundle_dir), "--json", "--new-tokens", "8", "--runs", "1", "--warmup", "0",
                 "--speculative", "lookup", "--prompt", REPETITIVE, "--threads", "1"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["speculative"]["acceptance_rate"] <= 1
    assert main(["run", str(bundle_dir), "--prompt", "ka", "--speculative", "draft"]) == 2
    assert "draft model" in capsys.readouterr().err


def test_shared_buffer_rollback_is_only_a_shorter_mask(fused):
    """Verify 4 tokens with a past, keep 2 of them, go on: the shared buffer's logits equal those
    of the numpy loop, whose rollback slices the cache, and those of a cache that never saw the
    rejected tokens."""
    import numpy as np

    from slmc.runtime.stepper import NumpyStepper

    kv, session = fused.manifest.kv, fused.session
    mask = np.ones((1, 12), np.int64)
    shared, sliced, clean = SharedStepper(session, kv, 1, capacity=12), NumpyStepper(session, kv, 1), \
        NumpyStepper(session, kv, 1)
    prompt = np.array([[5, 9, 17, 3]], np.int64)
    for stepper in (shared, sliced, clean):
        stepper.logits(prompt, mask[:, :4], np.arange(4)[None])
    verify = np.array([[11, 12, 13, 14]], np.int64)
    a = shared.logits(verify, mask[:, :8], np.arange(4, 8)[None])
    b = sliced.logits(verify, mask[:, :8], np.arange(4, 8)[None])
    assert np.max(np.abs(a - b)) < 1e-5
    shared.rollback(6)
    sliced.rollback(6)
    clean.logits(verify[:, :2], mask[:, :6], np.arange(4, 6)[None])
    going_on = np.array([[40, 41]], np.int64)
    outs = [s.logits(going_on, mask[:, :8], np.arange(6, 8)[None]) for s in (shared, sliced, clean)]
    assert np.max(np.abs(outs[0] - outs[2])) < 1e-5 and np.max(np.abs(outs[1] - outs[2])) < 1e-5


def test_several_new_tokens_with_a_past_match_transformers(bundle, hf_model):
    """The verify call's shape (a past, then 1 + k new tokens) against PyTorch on the checkpoint."""
    import numpy as np
    import torch

    from slmc.runtime.stepper import NumpyStepper

    prompt, verify = [5, 9, 17, 3, 8], [11, 12, 13, 14]
    stepper = NumpyStepper(bundle.session, bundle.manifest.kv, 1)
    stepper.logits(np.array([prompt]), np.ones((1, 5), np.int64), np.arange(5)[None])
    ours = stepper.logits(np.array([verify]), np.ones((1, 9), np.int64), np.arange(5, 9)[None])
    with torch.no_grad():
        past = hf_model(torch.tensor([prompt]), use_cache=True).past_key_values
        theirs = hf_model(torch.tensor([verify]), past_key_values=past, use_cache=True).logits.numpy()
    assert np.max(np.abs(ours - theirs)) < 1e-4
