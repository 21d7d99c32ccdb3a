"""Choosing the next token from logits, in numpy: greedy, temperature, top-k, top-p,
repetition penalty, with a seeded np.random.Generator so sampling is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from numbers import Integral, Real
from typing import Any

import numpy as np

from slmc.runtime.errors import GenerationError

_FIX = "see `slmc run --help` for the valid ranges"
_F32 = np.finfo(np.float32)
PENALTY_RANGE = (float(_F32.tiny), float(_F32.max))
"""repetition_penalty divides or multiplies float32 logits: outside float32's normal range it
becomes 0 or inf there, and the logits NaN. Inside it, the float64 arithmetic of `Sampler`
keeps every result finite (|logit| <= 3.4e38 times or over at most 3.4e38 is < 1.2e77)."""


def _int(value: Any) -> bool:
    """An integer (numpy's too), never a bool: a flag is not a count."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    """A finite real number (numpy's too), never a bool or a string."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SamplingParams:
    """One generation request's settings; unset fields come from the manifest's `generation`.

    Greedy decoding when do_sample is false or temperature is 0. Passing temperature,
    top_k or top_p without do_sample turns sampling on (temperature > 0).
    stop: strings that end generation (excluded from the text); stop_token_ids: extra
    ids that end it besides the bundle's eos ids (ignore_eos drops those, for benchmarks).
    """

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not _int(self.max_new_tokens) or self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not _number(self.temperature) or self.temperature < 0:  # also rejects NaN and inf
            problems.append(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}")
        if not _number(self.top_p) or not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1] (1 = off), got {self.top_p!r}")
        if not _int(self.top_k) or self.top_k < 0:
            problems.append(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        low, high = PENALTY_RANGE
        if not _number(self.repetition_penalty) or not low <= self.repetition_penalty <= high:
            problems.append(f"repetition_penalty must be a number from {low:.4g} to {high:.4g} (float32's normal "
                            f"range; 1 = off), got {self.repetition_penalty!r}")
        if self.seed is not None and (not _int(self.seed) or self.seed < 0):
            problems.append(f"seed must be an integer >= 0, got {self.seed!r}")
        for name in ("do_sample", "ignore_eos"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            problems.append(f"stop strings must be non-empty strings, got {list(self.stop)!r}")
        if any(not _int(i) or i < 0 for i in self.stop_token_ids):
            problems.append(f"stop_token_ids must be token ids (integers >= 0), got {list(self.stop_token_ids)!r}")
        if problems:
            raise GenerationError("; ".join(problems), where="sampling parameters", fix=_FIX)

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0

    @classmethod
    def resolve(cls, defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> SamplingParams:
        """Manifest defaults, then the caller's overrides (None values mean "not given")."""
        names = {f.name for f in fields(cls)}
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(given) - names)
        if unknown:
            raise GenerationError(f"unknown sampling parameter(s) {unknown}; known: {sorted(names)}",
                                  where="sampling parameters", fix=_FIX)
        if "do_sample" not in given and {"temperature", "top_k", "top_p"} & set(given):
            temperature = given.get("temperature", defaults.get("temperature", 1.0))
            given["do_sample"] = not _number(temperature) or temperature > 0  # a bad value is reported below
        for key in ("stop", "stop_token_ids"):
            if key in given:
                value = given[key]
                one = isinstance(value, (str, bytes, Integral)) or not isinstance(value, Iterable)
                given[key] = (value,) if one else tuple(value)
        base = {k: v for k, v in defaults.items() if k in names}
        return replace(cls(**base), **given)


@dataclass
class Sampler:
    """Turns [batch, vocab] logits into next token ids; remembers seen ids for the penalty."""

    params: SamplingParams
    batch: int
    vocab: int
    rng: np.random.Generator = field(init=False)
    seen: np.ndarray | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.params.seed)
        if self.params.repetition_penalty != 1.0:
            self.seen = np.zeros((self.batch, self.vocab), dtype=bool)

    def observe(self, rows: Sequence[Sequence[int]] | np.ndarray) -> None:
        """Record token ids (prompt or generated) per row for the repetition penalty."""
        if self.seen is not None:
            for row, ids in enumerate(rows):
                self.seen[row, np.asarray(ids, dtype=np.int64).ravel()] = True

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        if self.params.greedy:
            return self.penalised(logits).argmax(axis=-1)
        return self.draw(self.probs(logits))

    def penalised(self, logits: np.ndarray) -> np.ndarray:
        """The logits with the repetition penalty applied to the ids seen so far."""
        logits = np.asarray(logits, dtype=np.float32)
        if self.seen is None:
            return logits
        # In float64 with the penalty as a Python float: in float32, a penalty of 1e-30
        # turns positive logits into inf, then NaN once the maximum is subtracted.
        penalty = self.params.repetition_penalty
        wide = logits.astype(np.float64)
        penalised = np.where(wide > 0, wide / penalty, wide * penalty)
        return np.where(self.seen, penalised, wide)

    def probs(self, logits: np.ndarray) -> np.ndarray:
        """The distribution sampling draws from: penalty, temperature, top-k, then top-p
        (unnormalised after top-p; `draw` scales by the total). Speculative sampling
        accepts or rejects draft tokens against exactly this distribution."""
        logits = _tempered(self.penalised(logits), self.params.temperature)
        k = self.params.top_k
        if 0 < k < logits.shape[-1]:
            kth = np.partition(logits, -k, axis=-1)[:, -k, None]
            logits = np.where(logits < kth, -np.inf, logits)
        probs = _softmax(logits)
        if self.params.top_p < 1.0:
            probs = _top_p(probs, self.params.top_p)
        return probs

    def draw(self, probs: np.ndarray) -> np.ndarray:
        """One id per row from (possibly unnormalised) probabilities, with this sampler's generator."""
        cdf = np.cumsum(probs, axis=-1)
        draws = self.rng.random((probs.shape[0], 1)) * cdf[:, -1:]
        return np.minimum((cdf <= draws).sum(axis=-1), probs.shape[-1] - 1)


def _tempered(logits: np.ndarray, temperature: float) -> np.ndarray:
    """logits / temperature for any finite temperature > 0, without NaN.

    The row maximum is subtracted first and the division is done in float64 by the Python
    float: the maximum becomes exactly 0 and the rest <= 0, so a temperature that is 0 in
    float32 (1e-320) or tiny in float64 gives -inf (probability 0), never 0/0. That is the
    limit of sampling as the temperature goes to 0: the most likely token(s).
    """
    wide = np.asarray(logits, dtype=np.float64)
    shifted = wide - wide.max(axis=-1, keepdims=True)
    with np.errstate(over="ignore", under="ignore"):
        return shifted / temperature


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _top_p(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose mass reaches top_p (at least one)."""
    order = np.argsort(-probs, axis=-1, kind="stable")
    sorted_probs = np.take_along_axis(probs, order, axis=-1)
    before = np.cumsum(sorted_probs, axis=-1) - sorted_probs  # mass of strictly likelier tokens
    keep_sorted = before < top_p
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    return np.where(keep, probs, 0.0)
