"""Does the exported graph compute what the PyTorch model computes?

Three teacher-forced cases (empty past; prefill then decode steps feeding the
presents back; a left-padded batch of 2) and one greedy decode compared token by
token with `generate(do_sample=False)`. The ONNX side runs in slmc.runtime: its
steppers for the teacher-forced cases and its generation loop for the greedy decode,
so what passes here is what a device runs. Nothing raises on a mismatch: the report
says what differs and the compile stage decides.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slmc.export.onnx_export import load_checkpoint
from slmc.runtime.generate import greedy_ids
from slmc.runtime.stepper import Decoder

DEFAULT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ParityReport:
    """Max |Δlogits| per case (non-padded positions) and whether greedy tokens agree."""

    cases: dict[str, float]
    greedy_identical: bool
    tolerance: float
    ok: bool
    greedy_torch: list[int] = field(default_factory=list)
    greedy_onnx: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        worst = max(self.cases, key=lambda name: _rank(self.cases[name]))
        delta = self.cases[worst]
        text = (
            f"ONNX vs PyTorch parity {'passed' if self.ok else 'FAILED'}: worst case '{worst}' "
            f"max |Δlogits| = {delta:.3g} (tolerance {self.tolerance:g}); "
            + ", ".join(f"{name} {value:.3g}" for name, value in self.cases.items())
            + "."
        )
        if self.greedy_identical:
            return text + f" Greedy decoding gave identical tokens ({len(self.greedy_torch)} steps)."
        return text + (
            f" Greedy tokens differ: PyTorch {self.greedy_torch} vs ONNX Runtime {self.greedy_onnx}."
        )


def _rank(value: float) -> float:
    """Sort key putting NaN/inf (a broken graph) above any finite difference."""
    return value if np.isfinite(value) else float("inf")


def _torch_logits(model, ids, mask=None, positions=None) -> np.ndarray:
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(ids),
            attention_mask=None if mask is None else torch.from_numpy(mask),
            position_ids=None if positions is None else torch.from_numpy(positions),
            use_cache=False,
        )
    return out.logits.float().numpy()


def _case_prefill(model, graph: Decoder, ids: np.ndarray) -> float:
    seq = ids.shape[1]
    logits = graph.stepper(1, capacity=seq).logits(ids, np.ones_like(ids), np.arange(seq)[None])
    return float(np.abs(logits - _torch_logits(model, ids)).max())


def _case_decode(model, graph: Decoder, ids: np.ndarray, prefill: int) -> float:
    """Prefill `prefill` tokens, then one token per step with the cache carried over."""
    reference = _torch_logits(model, ids)
    stepper = graph.stepper(1, capacity=ids.shape[1])
    logits = stepper.logits(ids[:, :prefill], np.ones((1, prefill), np.int64), np.arange(prefill)[None])
    worst = float(np.abs(logits - reference[:, :prefill]).max())
    for pos in range(prefill, ids.shape[1]):
        mask = np.ones((1, pos + 1), np.int64)
        logits = stepper.logits(ids[:, pos : pos + 1], mask, np.asarray([[pos]]))
        worst = max(worst, float(np.abs(logits - reference[:, pos : pos + 1]).max()))
    return worst


def left_padded_positions(mask: np.ndarray) -> np.ndarray:
    """position_ids as Hugging Face derives them for left padding: cumsum - 1, clipped at 0."""
    return np.clip(np.cumsum(mask, axis=-1) - 1, 0, None).astype(np.int64)


def _case_left_padded(model, graph: Decoder, ids: np.ndarray, pad: int) -> float:
    """Batch 2: row 0 full, row 1 with `pad` padding tokens on the left."""
    mask = np.ones_like(ids)
    mask[1, :pad] = 0
    padded = ids.copy()
    padded[1, :pad] = 0
    positions = left_padded_positions(mask)
    logits = graph.stepper(2, capacity=ids.shape[1]).logits(padded, mask, positions)
    reference = _torch_logits(model, padded, mask, positions)
    keep = mask.astype(bool)
    return float(np.abs(logits[keep] - reference[keep]).max())


def _eos_ids(model) -> list[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(t) for t in eos]


def _torch_greedy(model, prompt: np.ndarray, steps: int) -> list[int]:
    config = copy.deepcopy(model.generation_config)
    config.update(do_sample=False, num_beams=1, max_new_tokens=steps, min_new_tokens=0)
    config.temperature = config.top_p = config.top_k = None
    if config.pad_token_id is None:
        config.pad_token_id = (_eos_ids(model) or [0])[0]
    ids = torch.from_numpy(prompt)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
    return [int(t) for t in out[0, prompt.shape[1] :]]


def check_parity(
    checkpoint_dir: Path,
    onnx_path: Path,
    *,
    seed: int = 0,
    greedy_steps: int = 8,
    tolerance: float = DEFAULT_TOLERANCE,
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
) -> ParityReport:
    """Compare PyTorch (eager, fp32) and slmc.runtime on the three cases and a greedy decode."""
    model = load_checkpoint(Path(checkpoint_dir))
    graph = Decoder.open(Path(onnx_path), providers=providers)
    rng = np.random.default_rng(seed)
    vocab = int(model.config.vocab_size)
    cases = {
        "prefill": _case_prefill(model, graph, rng.integers(0, vocab, (1, 7))),
        "decode_with_past": _case_decode(model, graph, rng.integers(0, vocab, (1, 7)), prefill=5),
        "left_padded_batch": _case_left_padded(model, graph, rng.integers(0, vocab, (2, 7)), pad=3),
    }
    prompt = rng.integers(0, vocab, (1, 5))
    torch_tokens = _torch_greedy(model, prompt, greedy_steps)
    onnx_tokens = greedy_ids(graph, prompt[0].tolist(), greedy_steps, _eos_ids(model))
    identical = torch_tokens == onnx_tokens
    within = all(np.isfinite(v) and v <= tolerance for v in cases.values())
    return ParityReport(
        cases=cases,
        greedy_identical=identical,
        tolerance=tolerance,
        ok=bool(within and identical),
        greedy_torch=torch_tokens,
        greedy_onnx=onnx_tokens,
    )
