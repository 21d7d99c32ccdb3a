"""Logit parity of a fused decoder against the graph it came from, on the cases that differ.

Cases: a prefill, one decode step with a random past (short, and at position 150),
several new tokens with a past for a batch of 2, a left-padded batch of 2 (prefill + 2 decode steps, each
graph fed its own cache; only unpadded positions compared), and, when the fused
graph may share its KV buffers, the fused graph's left-padded run through one
preallocated buffer per layer bound as both past and present, against its own
run with separate past and present.

Dynamic int8 graphs (DynamicQuantizeLinear) quantize each activation tensor with
one scale over the whole batch, padding rows included. The fused graph's padding
rows hold other values than the export's (masked, never read by real rows'
attention), so the scale, and with it every row, moves: there the left-padded
case is reported but not gated (the unfused int8 graph's rows depend on the
batch they share in the same way).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FLOAT_TOLERANCE = 1e-4
#: MatMulNBits (accuracy level 4) and MatMulInteger quantize activations at run time;
#: a 1e-7 change of an input can flip one rounding, so quantized graphs get more room
QUANTIZED_TOLERANCE = 2e-2


#: the cases whose inputs carry no padding 
UNPADDED_CASES = ("prefill", "decode_with_past", "tokens_with_past_batch2", "decode_far_position")


@dataclass(frozen=True)
class CheckResult:
    diffs: dict[str, float]
    tolerance: float
    ungated: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(np.isfinite(d) and d <= self.tolerance for k, d in self.diffs.items() if k not in self.ungated)

    def describe(self) -> str:
        cases = ", ".join(f"{k} {v:.2e}" + (" (not gated)" if k in self.ungated else "")
                          for k, v in self.diffs.items())
        return f"max |logit difference| per case: {cases} (tolerance {self.tolerance:g})"


class _Graph:
    """One CPU session plus what a feed needs: past names, KV heads and head size, vocab."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past = [n for n in inputs if n.startswith("past_key_values.")]
        self.present = [o.name for o in self.session.get_outputs()][1:]
        shape = inputs[self.past[0]].shape
        self.kv_heads, self.head_dim = int(shape[1]), int(shape[3])
        self.vocab = int(self.session.get_outputs()[0].shape[-1])

    def run(self, ids, mask, positions, past: dict) -> tuple[np.ndarray, dict]:
        feed = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, **past}
        logits, *present = self.session.run(None, feed)
        return logits, dict(zip(self.past, present))

    def empty(self, batch: int, length: int = 0, rng=None) -> dict:
        shape = (batch, self.kv_heads, length, self.head_dim)
        if rng is None:
            return {n: np.zeros(shape, np.float32) for n in self.past}
        return {n: rng.standard_normal(shape).astype(np.float32) for n in self.past}


def _positions(mask: np.ndarray, new: int) -> np.ndarray:
    return np.maximum(np.cumsum(mask, axis=1) - 1, 0)[:, -new:]


def _random_step(ref: _Graph, fused: _Graph, rng, batch: int, new: int, past: int) -> float:
    ids = rng.integers(0, ref.vocab, (batch, new))
    mask = np.ones((batch, past + new), np.int64)
    cache = ref.empty(batch, past, rng)
    a, _ = ref.run(ids, mask, _positions(mask, new), cache)
    b, _ = fused.run(ids, mask, _positions(mask, new), cache)
    return float(np.max(np.abs(a - b)))


def _left_padded(ref: _Graph, fused: _Graph, rng, steps: int = 2, pads: int = 3, width: int = 6):
    """Logits of a left-padded batch of 2 (valid positions only) from both graphs, and the tokens fed."""
    mask = np.ones((2, width), np.int64)
    mask[0, :pads] = 0
    ids = [rng.integers(0, ref.vocab, (2, width))] + [rng.integers(0, ref.vocab, (2, 1)) for _ in range(steps)]
    outputs = []
    for graph in (ref, fused):
        logits, cache = graph.run(ids[0], mask, _positions(mask, width), graph.empty(2))
        rows, full = [logits[mask.astype(bool)]], mask
        for step in range(steps):
            full = np.concatenate([full, np.ones((2, 1), np.int64)], axis=1)
            logits, cache = graph.run(ids[step + 1], full, _positions(full, 1), cache)
            rows.append(logits.reshape(2, -1))
        outputs.append(np.concatenate(rows))
    return outputs, ids, mask


def _shared_run(fused: _Graph, ids: list[np.ndarray], mask: np.ndarray) -> np.ndarray:
    """The left-padded run again, through one buffer per layer bound as past and present."""
    import onnxruntime as ort

    batch, capacity = mask.shape[0], mask.shape[1] + len(ids) - 1
    session = fused.session
    binding = session.io_binding()
    binding.bind_output("logits", "cpu")  # bound first: outputs come back in binding order
    buffers = [ort.OrtValue.ortvalue_from_numpy(np.zeros((batch, fused.kv_heads, capacity, fused.head_dim),
                                                         np.float32)) for _ in fused.past]
    for past, present, buffer in zip(fused.past, fused.present, buffers):
        binding.bind_ortvalue_input(past, buffer)
        binding.bind_ortvalue_output(present, buffer)
    full = np.concatenate([mask, np.ones((batch, len(ids) - 1), np.int64)], axis=1)
    rows = []
    for step, tokens in enumerate(ids):
        width = mask.shape[1] + step
        feed = {"input_ids": tokens, "attention_mask": np.ascontiguousarray(full[:, :width]),
                "position_ids": _positions(full[:, :width], tokens.shape[1])}
        for name, array in feed.items():
            binding.bind_cpu_input(name, array)
        binding.bind_output("logits", "cpu")  # a fresh output each step: its shape changes
        session.run_with_iobinding(binding)
        logits = binding.get_outputs()[0].numpy()
        rows.append(logits[mask.astype(bool)] if step == 0 else logits.reshape(batch, -1))
    return np.concatenate(rows)


def check_fused(reference: Path, fused: Path, *, shared_buffer: bool, quantized: bool = False,
                dynamic_int8: bool = False, tolerance: float | None = None, seed: int = 0,
                max_positions: int | None = None) -> CheckResult:
    """max |logits(fused) - logits(reference)| per case (see the module docstring).

    max_positions: the fused rotary caches' length; the far-position case stays inside it.
    """
    ref, new = _Graph(reference), _Graph(fused)
    far = 150 if max_positions is None else max(1, min(150, max_positions - 1))
    rng = np.random.default_rng(seed)
    diffs = {
        "prefill": _random_step(ref, new, rng, batch=1, new=8, past=0),
        "decode_with_past": _random_step(ref, new, rng, batch=1, new=1, past=7),
        "tokens_with_past_batch2": _random_step(ref, new, rng, batch=2, new=3, past=5),
        # rotary caches built offline must agree with the export's arithmetic far from 0 too
        "decode_far_position": _random_step(ref, new, rng, batch=1, new=1, past=far),
    }
    (a, b), ids, mask = _left_padded(ref, new, rng)
    diffs["left_padded_batch2"] = float(np.max(np.abs(a - b)))
    if shared_buffer:
        diffs["shared_kv_buffer"] = float(np.max(np.abs(b - _shared_run(new, ids, mask))))
    limit = tolerance if tolerance is not None else (QUANTIZED_TOLERANCE if quantized else FLOAT_TOLERANCE)
    return CheckResult(diffs=diffs, tolerance=limit, ungated=("left_padded_batch2",) if dynamic_int8 else ())
