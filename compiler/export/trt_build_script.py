"""Render the on-device TensorRT engine build scripts (build_engine.sh / build_engine.py).

TensorRT engines are tied to the GPU architecture and the TensorRT version,
so a bundle ships ONNX plus these scripts, pinned to the device's TensorRT
major.minor; the engine is built where it runs. All values are computed here;
the templates only place them through the `sh` / `py` filters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slmc.errors import ConfigError
from slmc.render import render_template

from .trt_ops import trt_major_minor
from .trt_profile import Shapes, trtexec_shape_args

#: precision -> trtexec flags. int8 is explicit quantization (QDQ in the graph);
#: --fp16 lets the layers outside the Q/DQ pairs run in fp16 rather than fp32.
TRTEXEC_FLAGS: dict[str, list[str]] = {
    "fp32": [],
    "fp16": ["--fp16"],
    "bf16": ["--bf16"],
    "int8": ["--int8", "--fp16"],
}
#: precision -> tensorrt.BuilderFlag names, the same choice for the Python API.
BUILDER_FLAGS: dict[str, list[str]] = {
    "fp32": [], "fp16": ["FP16"], "bf16": ["BF16"], "int8": ["INT8", "FP16"],
}

ENGINE_FILE = "model.engine"
TIMING_CACHE_FILE = "timing.cache"


def trtexec_args(*, profile: Mapping[str, Shapes], precision: str, workspace_mib: int,
                 onnx_file: str = "model.onnx") -> list[str]:
    """The trtexec command line after the program name, one argument per item."""
    shapes = trtexec_shape_args(profile)
    return [
        f"--onnx={onnx_file}",
        f"--saveEngine={ENGINE_FILE}",
        f"--minShapes={shapes['minShapes']}",
        f"--optShapes={shapes['optShapes']}",
        f"--maxShapes={shapes['maxShapes']}",
        *TRTEXEC_FLAGS[precision],
        f"--memPoolSize=workspace:{workspace_mib}M",
        f"--timingCacheFile={TIMING_CACHE_FILE}",
        "--skipInference",
    ]


def render_build_engine(*, profile: Mapping[str, Shapes], precision: str, trt_version: str,
                        workspace_mib: int, onnx_file: str = "model.onnx") -> dict[str, str]:
    """{"build_engine.sh": text, "build_engine.py": text} for a TensorRT bundle."""
    if precision not in TRTEXEC_FLAGS:
        raise ConfigError(f"no TensorRT engine build for precision {precision!r}",
                          where="compress.precision",
                          fix=f"use one of {sorted(TRTEXEC_FLAGS)} for TensorRT targets")
    if not isinstance(workspace_mib, int) or workspace_mib < 1:
        raise ConfigError(f"workspace_mib must be a positive integer, got {workspace_mib!r}",
                          where="runtime.workspace_mib", fix="give the builder workspace in MiB")
    pinned = trt_major_minor(trt_version)
    context: dict[str, Any] = {
        "trt_version": pinned,
        "precision": precision,
        "onnx_file": onnx_file,
        "engine_file": ENGINE_FILE,
        "timing_cache_file": TIMING_CACHE_FILE,
        "workspace_mib": workspace_mib,
        "trtexec_args": trtexec_args(profile=profile, precision=precision,
                                     workspace_mib=workspace_mib, onnx_file=onnx_file),
        "profile": {name: [list(s) for s in shapes] for name, shapes in profile.items()},
        "builder_flags": BUILDER_FLAGS[precision],
    }
    return {
        "build_engine.sh": render_template("build_engine.sh.j2", context),
        "build_engine.py": render_template("build_engine.py.j2", context),
    }
