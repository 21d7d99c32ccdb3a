"""Speculative decoding: draft several tokens cheaply, check them with ONE target call.

Each decode call feeds the target the last token plus k drafted tokens (the exported graph
takes several new tokens with a past: docs/bundle-format.md I/O), which gives the target's
logits at every one of those positions. Walking them in order, each draft token is kept
while the target agrees; the first disagreement is replaced by the target's own choice,
and when every draft is kept the last position gives one more token for free. The KV
cache then drops the rejected positions (`rollback`: a length for the shared-buffer loop,
a slice for the numpy loop).

Greedy: a draft is kept when it is the target's argmax, so the tokens are those of plain
greedy decoding. Sampling: `accept_draft`, the standard rule, keeps the output distributed
exactly as plain sampling's. Batch 1 only: rows of a batch would accept different numbers
of tokens.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from slmc.runtime.errors import GenerationError
from slmc.runtime.generate import Generation
from slmc.runtime.lookup import PromptLookup
from slmc.runtime.sampling import SamplingParams

MODES = ("auto", "off", "lookup", "draft")
MAX_DRAFT = 8
"""Most draft tokens per target call. The draft length adapts per call (`next_draft_length`);
this caps what one wrong guess costs: k extra positions through the target."""


def resolve_speculative(mode: str, params: SamplingParams, batch: int, *, has_draft: bool = False,
                        precision: str = "fp32") -> str:
    """"off", "lookup" or "draft": what `mode` means for this request.

    auto: prompt lookup for greedy decoding of one prompt, else off. Greedy lookup never
    changes the tokens and a step without a match is a plain step, so it cannot lose much;
    sampling keeps plain decoding (the same seed gives the same text as without
    speculation, and sampled text copies its input less, so fewer drafts are accepted).
    Also off for int8 bundles: their dynamic quantization (DynamicQuantizeLinear) scales
    activations per tensor, over every token of a call, so a verify call's logits round
    differently from a one-token step's and a near tie could pick another token; an
    explicit "lookup" still runs there.
    """
    if mode not in MODES:
        raise GenerationError(f"speculative must be one of {MODES}, got {mode!r}", where="speculative")
    if mode == "auto":
        return "lookup" if params.greedy and batch == 1 and precision != "int8" else "off"
    if mode == "draft" and not has_draft:
        raise GenerationError("speculative 'draft' needs a bundle with a draft model; this one has none",
                              where="speculative", fix="use --speculative=lookup (no second model) or off")
    if mode != "off" and batch != 1:
        raise GenerationError(f"speculative decoding runs one prompt at a time, got a batch of {batch}",
                              where="speculative", fix="pass one prompt per call, or speculative='off'")
    return mode


def accept_draft(probs: np.ndarray, draft: int, rng: np.random.Generator) -> tuple[int, bool]:
    """(token, accepted): the speculative-sampling step for a draft token from a deterministic drafter.

    The standard rule (Leviathan et al. 2023, Chen et al. 2023) keeps a draft x ~ q with
    probability min(1, p(x) / q(x)) and otherwise samples from max(0, p - q), renormalised.
    Prompt lookup proposes one token d with certainty: q is a point mass at d, so
      - d is kept with probability min(1, p(d) / 1) = p(d);
      - max(0, p - q) is p with d's entry zeroed (p(d) - 1 <= 0; p(x) - 0 elsewhere), so a
        rejection samples from p without d, renormalised.
    Then P(token = d) = p(d) and, for x != d, P(token = x) = (1 - p(d)) * p(x) / (1 - p(d)) = p(x):
    exactly p, the distribution plain sampling draws from (`Sampler.probs`: penalty,
    temperature, top-k, top-p). probs may be unnormalised (top-p leaves it so).
    """
    total = float(probs.sum())
    if rng.random() * total < probs[draft]:
        return draft, True
    rest = np.array(probs, dtype=np.float64)
    rest[draft] = 0.0
    cdf = np.cumsum(rest)
    if cdf[-1] <= 0:  # p(d) was 1 up to rounding: nothing else can be drawn
        return draft, True
    return int(min((cdf <= rng.random() * cdf[-1]).sum(), len(rest) - 1)), False


def next_draft_length(current: int, drafted: int, kept: int, cap: int = MAX_DRAFT) -> int:
    """transformers' heuristic schedule for assisted generation: +2 after a call that kept
    every draft, -1 (down to 1) after one that did not. Long drafts where the text is being
    copied, short ones where guesses fail, so wrong guesses cost little."""
    if not drafted:
        return current
    return min(current + 2, cap) if kept == drafted else max(current - 1, 1)


class SpeculativeGeneration(Generation):
    """A one-prompt Generation that drafts (prompt lookup, or a draft decoder) and verifies
    every draft in one target call.

    Iterating yields once per target call with the text of every token it produced.
    Counters for the benchmark: target_calls (decode calls, prefill excluded), drafted,
    accepted (draft tokens the target kept).
    """

    def __init__(self, *args, max_draft: int | None = None, drafter=None, **kwargs):
        """drafter: makes the drafter from the prompt and the generation's capacity (default:
        prompt lookup; `DraftModel` for a draft decoder); it has `propose(count)` and `extend(tokens)`."""
        super().__init__(*args, **kwargs)
        self.make_drafter = drafter or (lambda prompt, capacity: PromptLookup(prompt))
        if len(self.completions) != 1:
            raise GenerationError(f"speculative decoding runs one prompt at a time, got {len(self.completions)}",
                                  where="speculative", fix="pass one prompt per call")
        self.max_draft = MAX_DRAFT if max_draft is None else max_draft
        if self.max_draft < 1:
            raise ValueError(f"max_draft must be >= 1, got {self.max_draft}")
        self.target_calls = self.drafted = self.accepted = 0

    def __iter__(self) -> Iterator[list[str]]:
        if self.steps or self.completions[0].token_ids:
            raise GenerationError("a Generation runs once", where="Generation", fix="start a new one")
        prompt, new = self.completions[0].prompt_ids, self.params.max_new_tokens
        fed = len(prompt)  # positions in the KV cache
        mask = np.ones((1, fed + new), np.int64)
        step_ids, step_pos = np.zeros((1, 1), np.int64), np.zeros((1, 1), np.int64)  # refilled in place
        self.sampler.observe([prompt])
        start = time.perf_counter()
        logits = self.stepper(np.asarray([prompt], np.int64), mask[:, :fed], np.arange(fed)[None])
        token = int(self.sampler(logits)[0])
        finished = self._take(token)
        self.prefill_seconds = time.perf_counter() - start
        start, run_start = time.perf_counter(), self.stepper.run_seconds
        yield self._pieces()
        drafter, length = self.make_drafter(prompt, fed + new), self.max_draft
        drafter.extend([token])
        while not finished and self.steps < new:
            draft = drafter.propose(min(length, new - self.steps - 1))  # the call adds up to len(draft) + 1
            if draft:
                width = fed + 1 + len(draft)
                feed = np.asarray([[token, *draft]], np.int64)
                rows = self.stepper.logits(feed, mask[:, :width], np.arange(fed, width)[None])[0]
            else:  # nothing to check: a plain step, on the loop's fast path
                step_ids[0, 0], step_pos[0, 0] = token, fed
                rows = self.stepper(step_ids, mask[:, :fed + 1], step_pos)
            self.target_calls += 1
            self.drafted += len(draft)
            out, kept, finished = self._verify(rows, draft)
            fed += len(out)  # the fed token and the kept drafts; out[-1] is fed next
            if len(out) < len(draft) + 1:
                self.stepper.rollback(fed)
            drafter.extend(out)
            length = next_draft_length(length, len(draft), kept, self.max_draft)
            token = out[-1]
            yield self._pieces()
        self.decode_seconds = time.perf_counter() - start
        self.decode_run_seconds = self.stepper.run_seconds - run_start
        tail = self._finish()
        if any(tail):
            yield tail

    def _verify(self, rows: np.ndarray, draft: list[int]) -> tuple[list[int], int, bool]:
        """Walk the target's rows: keep drafts it agrees with, end at its first own choice.

        Returns the new tokens, how many of them are kept drafts, and whether the generation
        is finished (a stop token or string, or max_new_tokens reached)."""
        out: list[int] = []
        greedy, sampler = self.params.greedy, self.sampler
        for i, row in enumerate(rows):
            row = row[None]
            if i == len(draft):  # every draft kept: the last position's token comes for free
                token, kept = int(sampler(row)[0]), False
            elif greedy:
                token = int(sampler.penalised(row)[0].argmax())
                kept = token == draft[i]
            else:
                token, kept = accept_draft(sampler.probs(row)[0], draft[i], sampler.rng)
            out.append(token)
            self.accepted += kept
            if self._take(token) or self.steps == self.params.max_new_tokens:
                return out, i + kept, True
            if not kept:
                return out, i, False
        raise AssertionError("the target returned fewer rows than tokens fed")

    def _take(self, token: int) -> bool:
        """Record one token; True when it stops the row."""
        self.steps += 1
        stopped = self._record([token], [False])[0]
        if not stopped and self.sampler.seen is not None:
            self.sampler.observe([[token]])
        return stopped

    def _pieces(self) -> list[str]:
        return [self.streams[0].take()] if self.streams else [""]
