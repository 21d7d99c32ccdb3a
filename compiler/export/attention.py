"""Each layer's attention window, recorded in the exported graph for the passes after it.

The export keeps every past position in the KV cache and lets the model's own mask functions
apply a sliding window, so the graph is exact at any length. A pass that replaces that mask
(fuse_gqa: GroupQueryAttention's `local_window_size`) must know each layer's window, which the
graph does not state plainly (it is a constant deep inside the mask arithmetic). The export
reads it from the checkpoint's config through the family registry (`slmc.estimate.Arch`: one
`sliding_window` for every layer, or per layer from `layer_types` / the family's older keys)
and writes it into the model's metadata, where it travels with the graph through every pass.

A graph without the key has full attention in every layer: that is all an export written
before the key existed could hold.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import onnx_ir as ir

LAYER_WINDOWS_KEY = "slmc.layer_windows"
"""Model metadata: JSON list, per layer the sliding window (tokens a query attends to, itself
included) or null for full attention. Written only when some layer slides."""


def layer_windows(config: Mapping[str, Any]) -> list[int | None]:
    """Per layer of a Hugging Face config dict: its sliding window, or None for full attention."""
    from slmc.estimate import Arch

    arch = Arch.from_hf_config(config)
    window = arch.sliding_window
    if window is None:
        return [None] * arch.num_hidden_layers
    if arch.layer_types is None:
        return [window] * arch.num_hidden_layers
    return [window if kind == "sliding_attention" else None for kind in arch.layer_types]


def write_layer_windows(model: ir.Model, windows: list[int | None]) -> None:
    """Record `windows` in the model's metadata when any layer slides (else leave it out)."""
    if any(w is not None for w in windows):
        model.metadata_props[LAYER_WINDOWS_KEY] = json.dumps(windows)
    else:
        model.metadata_props.pop(LAYER_WINDOWS_KEY, None)


def read_layer_windows(model: ir.Model) -> list[int | None]:
    """The windows a graph records; [] (every layer full) when it records none."""
    text = model.metadata_props.get(LAYER_WINDOWS_KEY)
    if not text:
        return []
    windows = json.loads(text)
    if not isinstance(windows, list) or not all(w is None or (isinstance(w, int) and w > 0) for w in windows):
        raise ValueError(f"model metadata {LAYER_WINDOWS_KEY} must be a list of positive ints or nulls: {text!r}")
    return windows
