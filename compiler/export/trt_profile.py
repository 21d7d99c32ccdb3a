"""TensorRT optimization profile (min/opt/max shape per input) for a KV-cache decoder.

One profile serves both phases of generation:
- prefill: sequence up to max_seq_len, past 0;
- decode:  sequence 1, past up to max_seq_len - 1.

A TensorRT profile is a box per dimension and cannot say "past + sequence <=
max_seq_len": its max corner (sequence max_seq_len with past max_seq_len - 1)
is never used. The bound lives in two places: the `total_sequence` axis
(attention_mask) has max max_seq_len, and the runtime keeps past + sequence
within the manifest's limits.max_seq_len. The dynamo export reads the mask
only through a GatherND at kv positions, with no shape equality to past +
sequence, so the box's corners break no shape constraint of the graph (checked
with ONNX Runtime; not yet built with TensorRT, which this workplace lacks).

The opt point is where TensorRT tunes its kernels. Decode steps dominate
generation time, so opt is a decode step (sequence 1) at a typical context
of `opt_seq_len` tokens (default: half of max_seq_len) and `opt_batch_size`
(default 1: one stream, as on an embedded device).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from slmc.errors import ConfigError

Shapes = tuple[list[int], list[int], list[int]]


def axis_ranges(*, max_seq_len: int, max_batch_size: int, opt_seq_len: int | None = None,
                opt_batch_size: int = 1) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) for each named axis of the bundle's decoder I/O (docs/bundle-format.md)."""
    if max_seq_len < 1 or max_batch_size < 1:
        raise ConfigError(f"max_seq_len ({max_seq_len}) and max_batch_size ({max_batch_size}) "
                          "must be at least 1", where="limits", fix="set positive limits")
    total = max(1, max_seq_len // 2) if opt_seq_len is None else opt_seq_len
    if not 1 <= total <= max_seq_len:
        raise ConfigError(f"opt_seq_len {opt_seq_len} is outside 1..max_seq_len ({max_seq_len})",
                          where="runtime.opt_seq_len", fix="choose a typical context length")
    if not 1 <= opt_batch_size <= max_batch_size:
        raise ConfigError(f"opt_batch_size {opt_batch_size} is outside 1..max_batch_size "
                          f"({max_batch_size})", where="export.tensorrt.opt_batch_size",
                          fix="choose a typical batch size")
    return {
        "batch": (1, opt_batch_size, max_batch_size),
        "sequence": (1, 1, max_seq_len),
        "past_sequence": (0, total - 1, max_seq_len - 1),
        "total_sequence": (1, total, max_seq_len),
    }


def _dim(value: int | str, ranges: Mapping[str, tuple[int, int, int]], name: str) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    if value not in ranges:
        raise ConfigError(f"input {name!r} has axis {value!r}, which no TensorRT profile rule covers",
                          where="io.inputs", fix=f"name dynamic axes as docs/bundle-format.md does: {sorted(ranges)}")
    return ranges[value]


def trt_profile(io: Sequence[Mapping[str, Any]], *, max_seq_len: int, max_batch_size: int,
                opt_seq_len: int | None = None, opt_batch_size: int = 1) -> dict[str, Shapes]:
    """input name -> (min, opt, max) shapes, for every input in `io` (manifest "io.inputs" entries)."""
    ranges = axis_ranges(max_seq_len=max_seq_len, max_batch_size=max_batch_size,
                         opt_seq_len=opt_seq_len, opt_batch_size=opt_batch_size)
    profile: dict[str, Shapes] = {}
    for entry in io:
        dims = [_dim(d, ranges, entry["name"]) for d in entry["shape"]]
        profile[entry["name"]] = ([d[0] for d in dims], [d[1] for d in dims], [d[2] for d in dims])
    return profile


def _shape_list(profile: Mapping[str, Shapes], which: int) -> str:
    parts = []
    for name, shapes in profile.items():
        if any(ch in name for ch in ",:'\" "):
            raise ConfigError(f"input name {name!r} cannot be written in trtexec's shape syntax",
                              where="io.inputs", fix="use input names without , : quotes or spaces")
        parts.append(f"{name}:{'x'.join(str(d) for d in shapes[which])}")
    return ",".join(parts)


def trtexec_shape_args(profile: Mapping[str, Shapes]) -> dict[str, str]:
    """trtexec's --minShapes/--optShapes/--maxShapes values (`name:1x128,name2:...`)."""
    return {"minShapes": _shape_list(profile, 0), "optShapes": _shape_list(profile, 1),
            "maxShapes": _shape_list(profile, 2)}


def parse_trtexec_shapes(value: str) -> dict[str, list[int]]:
    """Inverse of one trtexec shape list (for checks and tests)."""
    shapes = {}
    for item in value.split(","):
        name, _, dims = item.rpartition(":")
        shapes[name] = [int(d) for d in dims.split("x")] if dims else []
    return shapes
