"""A draft decoder as a drafter: a second, smaller model in the bundle proposes tokens greedily.

It has its own session and KV cache and keeps the same text as the target (prompt and
accepted tokens). Proposing k tokens costs one call to catch up on the tokens accepted since
the last proposal (one or two) plus k - 1 single-token calls; after the target's check the
draft's cache is rolled back to the drafts the target kept.

The draft proposes its argmax: a deterministic drafter, so `accept_draft`'s point-mass rule
keeps sampling exact here too (sampling the draft instead would need the general
min(1, p/q) rule with the draft's distribution; not done).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from slmc.runtime.manifest import Manifest
from slmc.runtime.session import check_io, create_session
from slmc.runtime.stepper import Decoder


def open_draft(manifest: Manifest, *, threads: int | None = None) -> Decoder | None:
    """The bundle's draft decoder (manifest `draft` section), on the target's provider and
    threads, its I/O checked against its own section; None when the bundle has none."""
    draft = manifest.draft
    if draft is None:
        return None
    session = create_session(draft, threads=threads)
    check_io(session, draft)
    return Decoder(session, draft.kv)


class DraftModel:
    """Drafter over a draft Decoder for one generation (owns the draft's KV cache).

    capacity: the longest text this generation reaches (prompt + new tokens); the draft never
    runs past it because proposals are clipped to the tokens the generation may still add.
    """

    def __init__(self, decoder: Decoder, tokens: Iterable[int], capacity: int, *, loop: str = "auto"):
        self.stepper = decoder.stepper(1, loop=loop, capacity=capacity)
        self.tokens: list[int] = [int(t) for t in tokens]
        self.fed = 0  # positions in the draft's cache that hold self.tokens[:fed]
        self._in_cache: list[int] = []  # drafts fed to the cache beyond self.tokens, from the last proposal
        self._mask = np.ones((1, capacity), np.int64)
        self._step, self._pos = np.zeros((1, 1), np.int64), np.zeros((1, 1), np.int64)

    def extend(self, tokens: Iterable[int]) -> None:
        """Append accepted tokens; keep the cached drafts they confirm, drop the rest."""
        tokens = [int(t) for t in tokens]
        kept = 0
        while kept < min(len(tokens), len(self._in_cache)) and tokens[kept] == self._in_cache[kept]:
            kept += 1
        if self._in_cache:
            self.fed = len(self.tokens) + kept
            self.stepper.rollback(self.fed)
            self._in_cache = []
        self.tokens += tokens

    def propose(self, count: int) -> list[int]:
        """The draft's greedy continuation, `count` tokens ([] for count < 1)."""
        if count < 1:
            return []
        assert not self._in_cache, "extend() must follow each proposal"
        pending = self.tokens[self.fed:]
        end = self.fed + len(pending)
        logits = self.stepper(np.asarray([pending], np.int64), self._mask[:, :end],
                              np.arange(self.fed, end)[None])
        self.fed = end
        drafts = [int(logits[0].argmax())]
        while len(drafts) < count:
            self._step[0, 0], self._pos[0, 0] = drafts[-1], end
            end += 1
            drafts.append(int(self.stepper(self._step, self._mask[:, :end], self._pos)[0].argmax()))
            self._in_cache.append(drafts[-2])
        return drafts
