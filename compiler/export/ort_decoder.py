"""Run a bundle decoder graph (docs/bundle-format.md) with ONNX Runtime: feeds, empty past, one step.

Shared by parity and perplexity so both drive the graph exactly as the runtime
does. The KV dtype is read from the graph's inputs, so fp16 graphs work unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from slmc.export.io_spec import TOKEN_INPUTS

_ORT_TO_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class OrtDecoder:
    """An `InferenceSession` over a decoder graph plus what its KV inputs look like."""

    def __init__(self, onnx_path: Path, providers: Sequence[str] = ("CPUExecutionProvider",)):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(onnx_path), options, providers=list(providers))
        self.past = [i for i in self.session.get_inputs() if i.name not in TOKEN_INPUTS]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        """Past tensors with past_sequence = 0, in the graph's own KV dtype."""
        feeds = {}
        for value in self.past:
            _, heads, _, head_dim = value.shape
            feeds[value.name] = np.zeros((batch, heads, 0, head_dim), dtype=_ORT_TO_NUMPY[value.type])
        return feeds

    def step(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        past: dict[str, np.ndarray],
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One forward pass; returns logits and the next step's past (presents renamed)."""
        feeds = {
            "input_ids": np.asarray(input_ids, dtype=np.int64),
            "attention_mask": np.asarray(attention_mask, dtype=np.int64),
            "position_ids": np.asarray(position_ids, dtype=np.int64),
            **past,
        }
        outputs = self.session.run(None, feeds)
        logits, presents = outputs[0], outputs[1:]
        next_past = {value.name: present for value, present in zip(self.past, presents)}
        return logits, next_past

    def greedy(self, prompt: Sequence[int], steps: int, eos_token_ids: Sequence[int] = ()) -> list[int]:
        """Greedy new tokens for one prompt, stopping after an EOS token as `generate` does."""
        ids = np.asarray([list(prompt)], dtype=np.int64)
        past, total, tokens = self.empty_past(1), ids.shape[1], []
        positions = np.arange(total)[None]
        for _ in range(steps):
            logits, past = self.step(ids, np.ones((1, total), np.int64), positions, past)
            token = int(np.argmax(logits[0, -1]))
            tokens.append(token)
            if token in eos_token_ids:
                break
            ids, positions, total = np.asarray([[token]]), np.asarray([[total]]), total + 1
        return tokens
