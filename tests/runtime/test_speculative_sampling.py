"""Speculative sampling keeps plain sampling's distribution: the accept/reject rule alone, and
the whole loop on a toy target whose exact output distribution is known.

Fixed seeds, so each test gives the same counts every run (no flakiness); the thresholds are
chi-square quantiles at p = 0.0005, and a deliberately wrong rule shows the test can fail.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from slmc.runtime.sampling import SamplingParams
from slmc.runtime.speculative import SpeculativeGeneration, accept_draft


def chi2_limit(df: int, z: float = 3.29) -> float:
    """Upper chi-square quantile by the Wilson-Hilferty approximation (z = 3.29: p = 0.0005);
    no scipy in the runtime's test deps, and it is accurate to a few percent here."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def chi2(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    """Pearson's statistic and its degrees of freedom over cells expected >= 5 (the rest pooled);
    infinite when a cell of probability 0 was drawn."""
    expected = probs * counts.sum()
    big = expected >= 5
    observed = np.append(counts[big], counts[~big].sum())
    expected = np.append(expected[big], expected[~big].sum())
    keep = expected > 0
    if observed[~keep].sum():
        return math.inf, int(keep.sum()) - 1
    stat = float((((observed - expected) ** 2)[keep] / expected[keep]).sum())
    return stat, int(keep.sum()) - 1


@pytest.mark.parametrize("draft", [0, 2, 4, 5])
def test_accept_rule_draws_from_the_target_distribution(draft):
    probs = np.array([0.05, 0.3, 0.0, 0.4, 0.25, 0.0]) * 0.8  # unnormalised, as after top-p
    rng = np.random.default_rng(draft)
    draws = [accept_draft(probs, draft, rng) for _ in range(20000)]
    counts = np.bincount([t for t, _ in draws], minlength=len(probs))
    stat, df = chi2(counts, probs / probs.sum())
    assert stat < chi2_limit(df), (counts, stat)
    kept = [t for t, ok in draws if ok]
    assert all(t == draft for t in kept)
    assert abs(len(kept) / len(draws) - probs[draft] / probs.sum()) < 0.02  # kept with probability p(d)


def test_accept_rule_keeps_a_certain_draft():
    rng = np.random.default_rng(0)
    assert all(accept_draft(np.array([0.0, 1.0, 0.0]), 1, rng) == (1, True) for _ in range(200))


class BigramTarget:
    """A toy target for the decode loop: the next token's logits depend on the previous
    token only. Keeps the tokens its "cache" holds and checks what the loop feeds it:
    positions continue the cache, the mask covers cache + new tokens, rollbacks only shrink."""

    def __init__(self, table: np.ndarray):
        self.table, self.cache, self.run_seconds = table, [], 0.0

    def logits(self, ids, mask, positions):
        fed = ids[0].tolist()
        assert positions[0].tolist() == list(range(len(self.cache), len(self.cache) + len(fed)))
        assert mask.shape[1] == len(self.cache) + len(fed)
        self.cache += fed
        return self.table[ids[0]][None].astype(np.float32)

    def __call__(self, ids, mask, positions):
        return self.logits(ids, mask, positions)[:, -1, :]

    def rollback(self, length):
        assert length <= len(self.cache)
        del self.cache[length:]


VOCAB, NEW = 4, 4  # the first decode call drafts 2 tokens: kept drafts chain into the next check
PROMPT = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 1, 3, 2]  # lookup always finds a match and drafts from it
PARAMS = {"do_sample": True, "temperature": 0.8, "top_k": 3, "max_new_tokens": NEW}


def processed(table: np.ndarray, temperature: float, top_k: int) -> np.ndarray:
    """Each row's next-token distribution after temperature and top-k, computed here from scratch."""
    logits = table / temperature
    kth = np.sort(logits, axis=1)[:, -top_k][:, None]
    weights = np.where(logits >= kth, np.exp(logits - logits.max(axis=1, keepdims=True)), 0.0)
    return weights / weights.sum(axis=1, keepdims=True)


def sample_sequences(table: np.ndarray, runs: int) -> tuple[np.ndarray, int, int]:
    """Counts of every NEW-token output over `runs` seeded generations, drafted, accepted."""
    counts = np.zeros(VOCAB ** NEW, np.int64)
    drafted = accepted = 0
    params = SamplingParams(**PARAMS)
    for seed in range(runs):
        generation = SpeculativeGeneration(None, None, None, {"pad_token_id": 0, "eos_token_ids": []}, [PROMPT],
                                           SamplingParams(**{**PARAMS, "seed": seed}), vocab_size=VOCAB,
                                           stepper=BigramTarget(table))
        for _ in generation:
            pass
        tokens = generation.completions[0].token_ids
        assert len(tokens) == params.max_new_tokens
        counts[np.ravel_multi_index(tokens, (VOCAB,) * NEW)] += 1
        drafted, accepted = drafted + generation.drafted, accepted + generation.accepted
    return counts, drafted, accepted


@pytest.fixture(scope="module")
def table() -> np.ndarray:
    return np.random.default_rng(1).normal(0, 1.2, (VOCAB, VOCAB))


def exact(table: np.ndarray) -> np.ndarray:
    """P(x1..x4) = p(x1 | last prompt token) p(x2 | x1) p(x3 | x2) p(x4 | x3), flattened like the counts."""
    step = processed(table, PARAMS["temperature"], PARAMS["top_k"])
    probs = np.zeros(VOCAB ** NEW)
    for seq in itertools.product(range(VOCAB), repeat=NEW):
        chain = [PROMPT[-1], *seq]
        probs[np.ravel_multi_index(seq, (VOCAB,) * NEW)] = np.prod([step[a, b] for a, b in zip(chain, chain[1:])])
    return probs


def test_speculative_sampling_matches_the_exact_distribution(table):
    counts, drafted, accepted = sample_sequences(table, 5000)
    stat, df = chi2(counts, exact(table))
    assert stat < chi2_limit(df), (stat, df)
    assert drafted > 5000 and 0.1 < accepted / drafted < 0.9  # drafts were both kept and rejected


def test_the_check_catches_a_rule_that_keeps_every_draft(table, monkeypatch):
    """A biased rule (keep every draft) must fail the same test: the test has power."""
    monkeypatch.setattr("slmc.runtime.speculative.accept_draft", lambda probs, draft, rng: (draft, True))
    counts, _, _ = sample_sequences(table, 1500)
    stat, df = chi2(counts, exact(table))
    assert stat > chi2_limit(df)
