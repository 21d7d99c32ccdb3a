"""The prompt-lookup drafter: which tokens it proposes from the text so far."""

from __future__ import annotations

import pytest

from slmc.runtime.lookup import PromptLookup


def scan(tokens: list[int], count: int, max_ngram: int = 3) -> list[int]:
    """The same proposal by brute force: the longest suffix (<= max_ngram) found earlier,
    its latest earlier occurrence, and the tokens after it."""
    end = len(tokens)
    for n in range(min(max_ngram, end), 0, -1):
        suffix = tokens[end - n:]
        for start in range(end - n - 1, -1, -1):
            if tokens[start:start + n] == suffix:
                return tokens[start + n:start + n + count]
    return []


def test_proposes_what_followed_the_longest_latest_match():
    text = [5, 6, 7, 8, 9, 1, 6, 7, 2, 3, 5, 6, 7]
    assert PromptLookup(text, max_ngram=2).propose(3) == [2, 3, 5]  # "6 7" last ended before 2
    lookup = PromptLookup(text)
    assert lookup.propose(3) == [8, 9, 1]  # the longer "5 6 7" wins
    lookup.extend([8])
    assert lookup.propose(4) == [9, 1, 6, 7]  # "6 7 8" occurs once before
    assert lookup.propose(0) == []


def test_no_match_and_a_match_that_runs_into_the_suffix():
    assert PromptLookup([1, 2, 3]).propose(4) == []
    assert PromptLookup([4, 4, 4]).propose(5) == [4]  # "4 4" ended at 2: what follows is the suffix's end


@pytest.mark.parametrize("seed", range(6))
def test_incremental_index_equals_a_full_scan(seed):
    import random

    rng = random.Random(seed)
    tokens = [rng.randrange(4 if seed % 2 else 12) for _ in range(60)]
    lookup = PromptLookup(tokens[:5])
    for end in range(5, len(tokens)):
        assert lookup.propose(5) == scan(tokens[:end], 5), end
        lookup.extend([tokens[end]])


def test_bad_ngram_sizes_are_refused():
    with pytest.raises(ValueError, match="min_ngram"):
        PromptLookup([], min_ngram=3, max_ngram=2)
