"""Sampler and SamplingParams in isolation (numpy only, no bundle)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

from slmc.runtime.errors import GenerationError
from slmc.runtime.sampling import PENALTY_RANGE, Sampler, SamplingParams

LOGITS = np.log(np.array([[0.5, 0.25, 0.15, 0.07, 0.03]], dtype=np.float32))


def draws(params: SamplingParams, logits=LOGITS, n: int = 2000) -> np.ndarray:
    sampler = Sampler(params, batch=n, vocab=logits.shape[-1])
    return sampler(np.repeat(logits, n, axis=0))


@pytest.mark.parametrize("field, value", [("temperature", -1.0), ("temperature", float("nan")),
                                          ("top_p", 0.0), ("top_p", 1.01), ("top_k", -3), ("top_k", 1.5),
                                          ("repetition_penalty", 0.0), ("repetition_penalty", -1.0),
                                          ("max_new_tokens", 0)])
def test_each_parameter_is_validated(field, value):
    with pytest.raises(GenerationError, match=field):
        SamplingParams(**{field: value})


def test_all_problems_reported_together():
    with pytest.raises(GenerationError) as caught:
        SamplingParams(temperature=-1, top_p=2.0)
    assert "temperature" in str(caught.value) and "top_p" in str(caught.value)


def test_resolve_applies_defaults_and_turns_sampling_on():
    defaults = {"max_new_tokens": 9, "do_sample": False, "temperature": 0.7, "top_k": 0, "top_p": 1.0,
                "repetition_penalty": 1.0}
    assert SamplingParams.resolve(defaults, {}).greedy
    assert SamplingParams.resolve(defaults, {"top_k": 5}).do_sample  # manifest temperature 0.7 > 0
    assert SamplingParams.resolve(defaults, {"temperature": 0}).greedy
    resolved = SamplingParams.resolve(defaults, {"temperature": None, "stop": "END", "stop_token_ids": 7})
    assert resolved.max_new_tokens == 9 and resolved.stop == ("END",) and resolved.stop_token_ids == (7,)
    with pytest.raises(GenerationError, match="unknown sampling parameter"):
        SamplingParams.resolve(defaults, {"topk": 3})


def test_greedy_and_zero_temperature_take_the_argmax():
    assert draws(SamplingParams()).tolist() == [0] * 2000
    assert draws(SamplingParams(do_sample=True, temperature=0.0)).tolist() == [0] * 2000


def test_sampling_follows_the_distribution_and_the_seed():
    counts = np.bincount(draws(SamplingParams(do_sample=True, seed=0)), minlength=5) / 2000
    assert np.allclose(counts, np.exp(LOGITS[0]), atol=0.04)
    a, b = draws(SamplingParams(do_sample=True, seed=1)), draws(SamplingParams(do_sample=True, seed=1))
    assert (a == b).all() and (a != draws(SamplingParams(do_sample=True, seed=2))).any()


def test_low_temperature_sharpens():
    cold = np.bincount(draws(SamplingParams(do_sample=True, temperature=0.2, seed=0)), minlength=5)
    assert cold[0] / 2000 > 0.9


def test_top_k_keeps_only_the_k_most_likely():
    assert set(draws(SamplingParams(do_sample=True, top_k=2, seed=0)).tolist()) == {0, 1}
    assert set(draws(SamplingParams(do_sample=True, top_k=1, seed=0)).tolist()) == {0}


def test_top_p_keeps_the_smallest_nucleus():
    assert set(draws(SamplingParams(do_sample=True, top_p=0.5, seed=0)).tolist()) == {0}
    assert set(draws(SamplingParams(do_sample=True, top_p=0.8, seed=0)).tolist()) == {0, 1, 2}
    assert set(draws(SamplingParams(do_sample=True, top_p=0.01, seed=0)).tolist()) == {0}


def test_repetition_penalty_matches_transformers():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 12)).astype(np.float32)
    seen = [[1, 4, 4, 7], [0, 11]]
    ours = Sampler(SamplingParams(repetition_penalty=1.7), batch=2, vocab=12)
    ours.observe(seen)
    penalised = np.where(ours.seen, np.where(logits > 0, logits / 1.7, logits * 1.7), logits)
    ref = RepetitionPenaltyLogitsProcessor(1.7)(torch.tensor([[1, 4, 4, 7], [0, 11, 11, 11]]),
                                                torch.tensor(logits)).numpy()
    assert np.allclose(penalised, ref)
    assert (ours(logits) == ref.argmax(-1)).all()


@pytest.mark.parametrize("temperature", [1e-320, 5e-324, 1e-45, 1e-38, 1e-12])
def test_a_temperature_that_is_zero_in_float32_samples_the_most_likely_token(temperature):
    """1e-320 is 0 in float32, so logits / temperature was 0/0 = NaN and nothing was sampled.
    Tempered in float64 after subtracting the maximum, it is sampling's limit: the argmax."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value RuntimeWarning either
        picks = draws(SamplingParams(do_sample=True, temperature=temperature, seed=0))
    assert picks.tolist() == [0] * 2000


def test_a_huge_temperature_samples_uniformly():
    counts = np.bincount(draws(SamplingParams(do_sample=True, temperature=1e300, seed=0)), minlength=5) / 2000
    assert np.allclose(counts, 0.2, atol=0.04)


@pytest.mark.parametrize("penalty", [1e-300, 1e-39, 3.5e38, 1e300, 5e-324])
def test_a_repetition_penalty_outside_float32s_range_is_refused(penalty):
    with pytest.raises(GenerationError, match="float32's normal range"):
        SamplingParams(repetition_penalty=penalty)


@pytest.mark.parametrize("penalty", list(PENALTY_RANGE))
def test_the_extreme_penalties_float32_can_hold_keep_the_logits_finite(penalty):
    """At float32's smallest normal value a seen token with a positive logit dominates; at its
    largest it is pushed to ~0; in both cases sampling sees finite numbers, never NaN."""
    logits = np.array([[3.0e38, 2.0, -1.0, 0.5]], dtype=np.float32)
    for do_sample in (False, True):
        sampler = Sampler(SamplingParams(do_sample=do_sample, repetition_penalty=penalty, seed=0), batch=1, vocab=4)
        sampler.observe([[1, 2]])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            pick = int(sampler(logits)[0])
        assert pick in range(4)
    greedy = Sampler(SamplingParams(repetition_penalty=penalty), batch=1, vocab=4)
    greedy.observe([[0]])
    assert int(greedy(logits)[0]) == (0 if penalty < 1 else 1)
