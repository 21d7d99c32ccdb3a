"""The graph a bundle ships, measured against the fp32 checkpoint it came from.

The export's parity check holds the fp32 export to PyTorch exactly; the deploy stages after
it rewrite the graph (fusions, int8 / int4 weights, an fp16 cast), so a manifest that kept
the export's numbers would describe a graph it does not ship. This measures the shipped graph
itself, with the fp32 checkpoint (PyTorch) as the reference, on prompts cut from the held-out
text: each prompt is decoded greedily by both (how many tokens agree, where they first
diverge), then the prompt plus the checkpoint's continuation is run as one prefill (max
|Δlogits|, and how often the graph's top token is the checkpoint's along the way: unlike the
greedy count, this does not stop meaning anything after a first divergence).

The graph runs in slmc.runtime (its Decoder, steppers and greedy loop) as it would on a
device; PyTorch computes the reference only. Prompts are fixed slices of the held-out tokens
(no seed), so the numbers depend on the graph, the checkpoint and the held-out text alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slmc.runtime.generate import greedy_ids
from slmc.runtime.session import CPU
from slmc.runtime.stepper import Decoder

PROMPTS = 4
PROMPT_TOKENS = 16
NEW_TOKENS = 16
REFERENCE = "fp32 checkpoint (PyTorch)"


def held_out_prompts(tokens: Sequence[int] | np.ndarray, max_seq_len: int, *, count: int = PROMPTS,
                     length: int = PROMPT_TOKENS, new_tokens: int = NEW_TOKENS) -> tuple[list[list[int]], int]:
    """`count` prompts of `length` tokens evenly spaced over the held-out tokens, and how many new
    tokens each gets, both cut so that prompt + new tokens fit `max_seq_len` (the graph's context)."""
    ids = [int(t) for t in np.asarray(tokens).reshape(-1)]
    if not ids:
        raise ValueError("no held-out tokens to cut prompts from")
    length = max(1, min(length, max_seq_len // 2, len(ids)))
    new_tokens = max(1, min(new_tokens, max_seq_len - length))
    starts = sorted({int(s) for s in np.linspace(0, len(ids) - length, count)})
    return [ids[s:s + length] for s in starts], new_tokens


@dataclass(frozen=True)
class ShippedParity:
    """What the measurement found; `to_dict()` is the manifest's `metrics.parity` (without the verdict)."""

    stage: str                       # the deploy stage whose graph ships
    precision: str                   # the bundle's precision
    greedy_reference: list[list[int]]  # per prompt, the checkpoint's greedy tokens
    greedy_graph: list[list[int]]      # per prompt, the shipped graph's (slmc.runtime)
    max_abs_logit_diff: float        # over every position of every prefill (prompt + the reference's continuation)
    top1_agreement: float            # share of continuation positions whose argmax is the checkpoint's
    heldout_perplexity: float | None
    execution_provider: str = CPU
    note: str | None = None

    @property
    def first_divergence(self) -> list[int | None]:
        """Per prompt, the index of the first greedy token that differs; None where all agree."""
        return [next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b),
                     None if len(ref) == len(got) else min(len(ref), len(got)))
                for ref, got in zip(self.greedy_reference, self.greedy_graph)]

    @property
    def agree(self) -> int:
        """Greedy tokens generated identically, up to each prompt's first divergence, summed."""
        return sum(len(ref) if first is None else first
                   for ref, first in zip(self.greedy_reference, self.first_divergence))

    @property
    def tokens(self) -> int:
        return sum(len(ref) for ref in self.greedy_reference)

    @property
    def finite(self) -> bool:
        return math.isfinite(self.max_abs_logit_diff)

    def to_dict(self) -> dict[str, Any]:
        diff = self.max_abs_logit_diff if self.finite else None  # JSON has no NaN
        return {
            "stage": self.stage,
            "precision": self.precision,
            "reference": REFERENCE,
            "execution_provider": self.execution_provider,
            "greedy_identical": self.agree == self.tokens,
            "greedy": {"prompts": len(self.greedy_reference), "tokens": self.tokens, "agree": self.agree,
                       "first_divergence": self.first_divergence,
                       "reference": self.greedy_reference, "graph": self.greedy_graph},
            "max_abs_logit_diff": diff,
            "cases": {"prefill": diff},  # the export block's form, for readers of `parity.cases`
            "top1_agreement": round(self.top1_agreement, 6),
            "heldout_perplexity": self.heldout_perplexity,
            "note": self.note,  # what the numbers do not cover (a TensorRT builder flag), or None
        }

    def describe(self) -> str:
        return (f"the shipped graph ({self.stage}, {self.precision}) vs the {REFERENCE}: greedy tokens "
                f"{self.agree}/{self.tokens} identical, max |Δlogits| {self.max_abs_logit_diff:.3g}, "
                f"top-1 agreement {self.top1_agreement:.1%}")


def with_verdict(block: dict[str, Any], tolerance: float) -> dict[str, Any]:
    """The block plus `tolerance` and `ok` (exact parity as the export's check defines it: greedy
    tokens identical and max |Δlogits| within tolerance). Added when the manifest is written, so a
    cached measurement is judged by the current export.parity_tolerance."""
    diff = block.get("max_abs_logit_diff")
    ok = bool(block.get("greedy_identical")) and diff is not None and diff <= tolerance
    return {**block, "tolerance": tolerance, "ok": ok}


def _reference(model, prompt: list[int], new_tokens: int) -> tuple[list[int], np.ndarray]:
    """The checkpoint's greedy continuation, each token the argmax of a forward pass over everything
    before it (no cache: the model's function itself), and the logits of the last pass, which cover
    every position of prompt + continuation but its final token."""
    import torch

    tokens: list[int] = []
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(input_ids=torch.tensor([prompt + tokens]), use_cache=False).logits[0]
            tokens.append(int(logits[-1].argmax()))
    return tokens, logits.float().numpy()


def measure_shipped(checkpoint, onnx_path: Path, heldout_tokens: Sequence[int] | np.ndarray, *, stage: str,
                    precision: str, max_seq_len: int, heldout_perplexity: float | None,
                    providers: Sequence[str] = (CPU,), note: str | None = None) -> ShippedParity:
    """Run the graph at `onnx_path` in slmc.runtime against `checkpoint` (a Hugging Face folder or a
    loaded model) on prompts cut from `heldout_tokens`; see the module docstring."""
    import torch

    from slmc.export.onnx_export import load_checkpoint

    model = checkpoint.eval() if isinstance(checkpoint, torch.nn.Module) else load_checkpoint(Path(checkpoint))
    graph = Decoder.open(Path(onnx_path), providers=providers)
    prompts, new_tokens = held_out_prompts(heldout_tokens, max_seq_len)
    greedy_reference, greedy_graph = [], []
    worst, agreeing, positions = 0.0, 0, 0
    for prompt in prompts:
        reference, expected = _reference(model, prompt, new_tokens)
        greedy_reference.append(reference)
        greedy_graph.append(greedy_ids(graph, prompt, new_tokens))
        # one prefill of what the reference's last pass saw: the prompt and the continuation but its last token
        sequence = np.asarray([prompt + reference[:-1]], dtype=np.int64)
        width = sequence.shape[1]
        got = graph.stepper(1, capacity=width).logits(sequence, np.ones_like(sequence),
                                                      np.arange(width, dtype=np.int64)[None])[0]
        worst = max(worst, float(np.abs(got - expected).max()), key=_rank)
        # the positions that predict the continuation: the prompt's last, then each new token but the last
        predicting = slice(len(prompt) - 1, width)
        agreeing += int((got[predicting].argmax(-1) == expected[predicting].argmax(-1)).sum())
        positions += new_tokens
    return ShippedParity(stage=stage, precision=precision, greedy_reference=greedy_reference,
                         greedy_graph=greedy_graph, max_abs_logit_diff=worst,
                         top1_agreement=agreeing / positions, heldout_perplexity=heldout_perplexity,
                         execution_provider=providers[0], note=note)


def _rank(value: float) -> float:
    """Sort key putting NaN (a broken graph) above any finite difference."""
    return value if math.isfinite(value) else math.inf
