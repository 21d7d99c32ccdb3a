"""Prompt lookup: draft tokens by finding the text's last few tokens earlier in the text.

Generation that copies from its input (rewriting a function, answering from a document,
editing code) repeats long runs of the prompt; where the last n tokens occurred before,
the tokens that followed them then are a good guess for the next ones (transformers'
`prompt_lookup_num_tokens`, vLLM's n-gram proposer). No second model is needed.

Hand-written (a dict per n-gram size, updated as tokens arrive) because the lookup runs
once per target call on the decode path: transformers' version scans the whole sequence
with tensor ops at every step, which at small-model token costs would cost more than the
step it saves.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_NGRAM = 3
"""Longest suffix looked up; longer matches are tried first (a longer match is a more
specific context, so its continuation is more likely right)."""
MIN_NGRAM = 1


class PromptLookup:
    """The text so far (prompt and accepted output) and, per n-gram size, where each n-gram
    last ended, so `propose` costs a few dict look-ups whatever the text's length.

    Of several earlier occurrences the latest wins: in output that repeats itself or walks
    through the prompt, the most recent copy is the one being followed.
    """

    def __init__(self, tokens: Iterable[int] = (), *, max_ngram: int = MAX_NGRAM, min_ngram: int = MIN_NGRAM):
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self.tokens: list[int] = []
        # _ends[n][ngram] = the end (exclusive) of ngram's latest occurrence that is not the
        # text's own suffix, so a match always has at least one token after it
        self._ends: list[dict[tuple[int, ...], int]] = [{} for _ in range(max_ngram + 1)]
        self.extend(tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        """Append accepted tokens (drafts are never appended before the target accepts them)."""
        text, ends = self.tokens, self._ends
        for token in tokens:
            end = len(text)
            for n in range(1, min(self.max_ngram, end) + 1):  # the current suffixes stop being the suffix
                ends[n][tuple(text[end - n:end])] = end
            text.append(int(token))

    def propose(self, count: int) -> list[int]:
        """Up to `count` tokens that followed the longest earlier match of the text's suffix
        ([] when nothing matches or count < 1)."""
        if count < 1:
            return []
        text, end = self.tokens, len(self.tokens)
        for n in range(min(self.max_ngram, end), self.min_ngram - 1, -1):
            start = self._ends[n].get(tuple(text[end - n:]))
            if start is not None:
                return text[start:start + count]
        return []
