"""The decode loop: left-padded prefill, then one token per step until every row stops.

Limits (documented behaviour): a prompt longer than the context keeps its last
`max_seq_len - 1` tokens; max_new_tokens is clipped so prompt + new tokens fit in
`max_seq_len`. Both emit a GenerationWarning. An empty prompt starts from the
bundle's BOS token when it has one, else it is a GenerationError.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort

from slmc.runtime.errors import GenerationError, GenerationWarning
from slmc.runtime.manifest import KVSpec
from slmc.runtime.sampling import Sampler, SamplingParams
from slmc.runtime.stepper import Decoder, make_stepper
from slmc.runtime.tokenizer import TextStream, TextTokenizer, final_text


@dataclass
class Completion:
    """One row's result. token_ids end with the stop token id when one ended the row."""

    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"  # "stop": eos, a stop token or a stop string; "length": max_new_tokens


def fit_prompt(ids: list[int], bos_token_id: int | None, context: int) -> list[int]:
    """Empty -> [BOS] (or an error without one); longer than context - 1 -> its last tokens."""
    if not ids:
        if bos_token_id is None:
            raise GenerationError("the prompt is empty and the bundle has no bos_token_id to start from",
                                  where="prompt", fix="pass a non-empty prompt")
        return [bos_token_id]
    if len(ids) > context - 1:
        warnings.warn(f"prompt has {len(ids)} tokens; kept its last {context - 1} "
                      f"(context is {context}, one position is left for a new token)",
                      GenerationWarning, stacklevel=4)
        return ids[len(ids) - (context - 1):]
    return ids


def clip_new_tokens(max_new_tokens: int, longest_prompt: int, context: int) -> int:
    """max_new_tokens, reduced so the longest prompt plus new tokens fit the context."""
    room = context - longest_prompt
    if max_new_tokens > room:
        warnings.warn(f"max_new_tokens={max_new_tokens} clipped to {room}: the context is {context} "
                      f"tokens and the prompt uses {longest_prompt}", GenerationWarning, stacklevel=4)
        return room
    return max_new_tokens


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, new_tokens: int):
    """input_ids [B, P], attention_mask [B, P + new] (future columns already 1), position_ids [B, P]."""
    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), width + new_tokens), dtype=np.int64)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = prompt
        mask[row, width - len(prompt):] = 1
    positions = np.maximum(np.cumsum(mask[:, :width], axis=1) - 1, 0)
    return ids, mask, positions


class Generation:
    """One batch in progress. Iterating advances it one token per step and yields, per row,
    the new complete text ('' when none, or when text is not tracked); `completions` holds
    the results once the iteration ends. Owns its KV cache: one thread at a time.

    stepper: a ready stepper to decode with instead of one made from session and kv.
    tokenizer None: token ids only (texts stay ''), for runs on token ids alone, such as the
    compiler's greedy parity check, which so decodes with the loop a device runs.
    """

    def __init__(self, session: ort.InferenceSession, kv: KVSpec, tokenizer: TextTokenizer | None,
                 tokens: Mapping[str, Any], prompts: list[list[int]], params: SamplingParams,
                 *, vocab_size: int, loop: str = "auto", track_text: bool = False, stepper=None):
        self.tokenizer, self.params, self.tokens = tokenizer, params, tokens
        self.completions = [Completion(prompt_ids=list(p)) for p in prompts]
        capacity = max(len(p) for p in prompts) + params.max_new_tokens
        self.stepper = stepper or make_stepper(session, kv, len(prompts), loop, capacity=capacity)
        self.sampler = Sampler(params, len(prompts), vocab_size)
        stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else set(tokens["eos_token_ids"]))
        self.stop_ids = frozenset(int(i) for i in stop_ids)
        tracked = track_text or bool(params.stop)
        if tracked and tokenizer is None:
            raise GenerationError("text or stop strings need a tokenizer", where="Generation",
                                  fix="pass the bundle's tokenizer, or stop on token ids (stop_token_ids)")
        self.streams = [TextStream(tokenizer, params.stop) for _ in prompts] if tracked else None
        self.prefill_seconds = self.decode_seconds = self.decode_run_seconds = 0.0
        self.steps = 0  # tokens generated per row (timings: for the benchmark)

    def __iter__(self) -> Iterator[list[str]]:
        if self.steps or any(c.token_ids for c in self.completions):
            raise GenerationError("a Generation runs once", where="Generation", fix="start a new one")
        prompts = [c.prompt_ids for c in self.completions]
        new = self.params.max_new_tokens
        ids, mask, positions = left_pad(prompts, self.tokens["pad_token_id"], new)
        self.sampler.observe(prompts)
        next_pos = positions[:, -1:] + 1
        step_ids = np.zeros((len(prompts), 1), np.int64)  # refilled in place: steppers may bind it once
        penalised = self.sampler.seen is not None
        done = [False] * len(prompts)
        start = time.perf_counter()
        logits = self.stepper(ids, mask[:, : ids.shape[1]], positions)
        for step in range(new):
            token = self.sampler(logits)
            finished = self._record(token.tolist(), done)
            self.steps += 1
            if step == 0:
                self.prefill_seconds = time.perf_counter() - start
                start, run_start = time.perf_counter(), self.stepper.run_seconds
            yield [s.take() for s in self.streams] if self.streams else [""] * len(done)
            done = [d or f for d, f in zip(done, finished)]
            if all(done) or step == new - 1:
                break
            if penalised:
                self.sampler.observe(token[:, None])
            step_ids[:, 0] = token
            logits = self.stepper(step_ids, mask[:, :ids.shape[1] + step + 1], next_pos)
            next_pos += 1
        self.decode_seconds = time.perf_counter() - start
        self.decode_run_seconds = self.stepper.run_seconds - run_start
        tail = self._finish()
        if any(tail):
            yield tail

    def _record(self, tokens: list[int], done: list[bool]) -> list[bool]:
        """Append each active row's token; return which rows stop now (plain Python: this
        runs once per token, and numpy's per-call overhead exceeds the work at batch 1)."""
        hits = [False] * len(tokens)
        for row, token in enumerate(tokens):
            if done[row]:
                continue
            completion = self.completions[row]
            completion.token_ids.append(token)
            hit = token in self.stop_ids
            if self.streams and not hit:
                self.streams[row].push(token)
                hit = self.streams[row].stopped
            if hit:
                completion.finish_reason, hits[row] = "stop", True
        return hits

    def _finish(self) -> list[str]:
        """Fill each completion's text; return the text streams still held back."""
        tail = []
        for row, completion in enumerate(self.completions):
            ids = completion.token_ids
            if ids and completion.finish_reason == "stop" and ids[-1] in self.stop_ids:
                ids = ids[:-1]
            if self.tokenizer is not None:
                completion.text = final_text(self.tokenizer, ids, self.params.stop)
            tail.append(self.streams[row].finish(completion.text) if self.streams else "")
        return tail


def greedy_ids(decoder: Decoder, prompt: Sequence[int], max_new_tokens: int,
               eos_token_ids: Sequence[int] = (), *, loop: str = "auto") -> list[int]:
    """Greedy new token ids for one prompt (ending with the EOS id that stopped it, if one did),
    decoded by the loop `generate` runs; no tokenizer or manifest needed."""
    tokens = {"pad_token_id": 0, "eos_token_ids": list(eos_token_ids)}  # one row: nothing is padded
    generation = Generation(decoder.session, decoder.kv, None, tokens, [list(prompt)],
                            SamplingParams(max_new_tokens=max_new_tokens), vocab_size=decoder.vocab, loop=loop)
    for _ in generation:
        pass
    return generation.completions[0].token_ids
