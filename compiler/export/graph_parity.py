"""Logit parity of a rewritten decoder against the graph it came from, on the cases that differ.

Every rewrite of an exported graph (ORT's offline optimizer, slmc's fusions, the
TensorRT preparation) must compute what its input computed; this is that check.
Cases: a prefill, one decode step with a random past (short, and at position 150),
several new tokens with a past for a batch of 2, for a graph with sliding-window layers
three new tokens whose past reaches past the widest window (where a window that is
applied wrongly shows), a left-padded batch of 2 (prefill + 2 decode steps, each graph
fed its own cache; only unpadded positions compared), and,
when the rewritten graph may share its KV buffers, its left-padded run through one
preallocated buffer per layer bound as both past and present, against its own run
with separate past and present.

Both graphs run through slmc.runtime's steppers, the loops a device runs.

Dynamic int8 graphs (DynamicQuantizeLinear) quantize each activation tensor with
one scale over the whole batch, padding rows included. The fused graph's padding
rows hold other values than the export's (masked, never read by real rows'
attention), so the scale, and with it every row, moves: there the left-padded
case is reported but not gated (the unfused int8 graph's rows depend on the
batch they share in the same way).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from os import PathLike

import numpy as np

from slmc.runtime.stepper import Decoder

FLOAT_TOLERANCE = 1e-4
#: MatMulNBits (accuracy level 4) and MatMulInteger quantize activations at run time;
#: a 1e-7 change of an input can flip one rounding, so quantized graphs get more room
QUANTIZED_TOLERANCE = 2e-2
#: ops whose graphs get QUANTIZED_TOLERANCE
QUANTIZED_OPS = frozenset({"MatMulNBits", "MatMulInteger", "GatherBlockQuantized", "DynamicQuantizeLinear"})

#: the cases whose inputs carry no padding
UNPADDED_CASES = ("prefill", "decode_with_past", "tokens_with_past_batch2", "decode_far_position")
#: the unpadded case a graph with sliding-window layers adds
WINDOW_CASE = "tokens_past_window"


def gates_for(ops: Iterable[str]) -> dict[str, bool]:
    """compare_graphs' `quantized` and `dynamic_int8` for a graph with these ops (op_histogram keys)."""
    names = {op.split("::")[-1] for op in ops}
    return {"quantized": bool(names & QUANTIZED_OPS), "dynamic_int8": "DynamicQuantizeLinear" in names}


@dataclass(frozen=True)
class GraphParity:
    diffs: dict[str, float]
    tolerance: float
    ungated: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(np.isfinite(d) and d <= self.tolerance for k, d in self.diffs.items() if k not in self.ungated)

    @property
    def unpadded(self) -> float:
        """The largest difference on inputs without padding."""
        return max(v for k, v in self.diffs.items() if k in UNPADDED_CASES or k == WINDOW_CASE)

    def describe(self) -> str:
        cases = ", ".join(f"{k} {v:.2e}" + (" (not gated)" if k in self.ungated else "")
                          for k, v in self.diffs.items())
        return f"max |logit difference| per case: {cases} (tolerance {self.tolerance:g})"


def _positions(mask: np.ndarray, new: int) -> np.ndarray:
    return np.maximum(np.cumsum(mask, axis=1) - 1, 0)[:, -new:]


def _random_step(ref: Decoder, new: Decoder, rng, batch: int, tokens: int, past: int) -> float:
    ids = rng.integers(0, ref.vocab, (batch, tokens))
    mask = np.ones((batch, past + tokens), np.int64)
    shape = (batch, ref.kv.num_heads, past, ref.kv.head_dim)
    cache = [rng.standard_normal(shape).astype(np.float32) for _ in ref.kv.past]
    a = ref.stepper(batch, past=cache).logits(ids, mask, _positions(mask, tokens))
    b = new.stepper(batch, past=cache).logits(ids, mask, _positions(mask, tokens))
    return float(np.max(np.abs(a - b)))


def _left_padded_run(stepper, ids: list[np.ndarray], mask: np.ndarray) -> np.ndarray:
    """Logits of the valid positions of a left-padded prefill and one decode step per further
    entry of `ids`, every row attending to its whole (growing) mask."""
    logits = stepper.logits(ids[0], mask, _positions(mask, mask.shape[1]))
    rows, full = [logits[mask.astype(bool)]], mask
    for tokens in ids[1:]:
        full = np.concatenate([full, np.ones((mask.shape[0], 1), np.int64)], axis=1)
        rows.append(np.array(stepper.logits(tokens, full, _positions(full, 1)).reshape(mask.shape[0], -1)))
    return np.concatenate(rows)


def compare_graphs(reference: str | PathLike | bytes, candidate: str | PathLike | bytes, *,
                   shared_buffer: bool, quantized: bool = False, dynamic_int8: bool = False,
                   tolerance: float | None = None, seed: int = 0,
                   max_positions: int | None = None, window: int | None = None) -> GraphParity:
    """max |logits(candidate) - logits(reference)| per case (see the module docstring).

    Each graph is a file or a serialized model. shared_buffer: also run the candidate
    through the shared-KV-buffer loop. max_positions: the fused rotary caches' length;
    the far-position case stays inside it. window: the widest sliding window of the
    graph's layers; its case runs when the positions reach past it.
    """
    ref, new = Decoder.open(reference, threads=1), Decoder.open(candidate, threads=1)
    far = 150 if max_positions is None else max(1, min(150, max_positions - 1))
    rng = np.random.default_rng(seed)
    diffs = {
        "prefill": _random_step(ref, new, rng, batch=1, tokens=8, past=0),
        "decode_with_past": _random_step(ref, new, rng, batch=1, tokens=1, past=7),
        "tokens_with_past_batch2": _random_step(ref, new, rng, batch=2, tokens=3, past=5),
        # rotary caches built offline must agree with the export's arithmetic far from 0 too
        "decode_far_position": _random_step(ref, new, rng, batch=1, tokens=1, past=far),
    }
    if window is not None and (max_positions is None or window + 8 <= max_positions):
        diffs[WINDOW_CASE] = _random_step(ref, new, rng, batch=1, tokens=3, past=window + 5)
    steps, pads, width = 2, 3, 6
    mask = np.ones((2, width), np.int64)
    mask[0, :pads] = 0
    ids = [rng.integers(0, ref.vocab, (2, width))] + [rng.integers(0, ref.vocab, (2, 1)) for _ in range(steps)]
    a, b = (_left_padded_run(graph.stepper(2, loop="numpy"), ids, mask) for graph in (ref, new))
    diffs["left_padded_batch2"] = float(np.max(np.abs(a - b)))
    if shared_buffer:
        shared = new.stepper(2, loop="shared", capacity=width + steps)
        diffs["shared_kv_buffer"] = float(np.max(np.abs(b - _left_padded_run(shared, ids, mask))))
    limit = tolerance if tolerance is not None else (QUANTIZED_TOLERANCE if quantized else FLOAT_TOLERANCE)
    return GraphParity(diffs=diffs, tolerance=limit, ungated=("left_padded_batch2",) if dynamic_int8 else ())
