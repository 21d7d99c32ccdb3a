"""One ONNX Runtime InferenceSession per bundle, with options chosen for decoding.

Decoding runs one small graph per token, so thread spin-up and graph
optimisation matter more than peak throughput of one big run.
"""

from __future__ import annotations

import warnings

import onnxruntime as ort

from slmc.runtime.errors import BundleError, GenerationWarning
from slmc.runtime.manifest import Manifest

CPU = "CPUExecutionProvider"


def providers_for(manifest: Manifest) -> list[str]:
    """The manifest's execution provider then CPU, keeping only those this ORT build has.

    A missing provider only gets here with allow_foreign; it falls back to CPU with a warning.
    """
    wanted = [manifest.execution_provider] + ([CPU] if manifest.execution_provider != CPU else [])
    available = set(ort.get_available_providers())
    chosen = [p for p in wanted if p in available]
    if manifest.execution_provider not in available:
        warnings.warn(f"{manifest.execution_provider} is not available; running on {CPU}",
                      GenerationWarning, stacklevel=3)
    return chosen or [CPU]


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """All graph optimisations, sequential execution, intra-op threads (None: ORT's default)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: ORT's warnings are not the user's business
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def create_session(manifest: Manifest, *, threads: int | None = None) -> ort.InferenceSession:
    """An InferenceSession for the bundle's model file; load failures become BundleError."""
    path = manifest.path("model")
    try:
        return ort.InferenceSession(str(path), session_options(threads), providers=providers_for(manifest))
    except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types for a bad model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"ONNX Runtime cannot load the model: {first}", where=str(path),
                          fix="re-export the model with an onnxruntime version >= runtime.min_onnxruntime") from None


TOKEN_INPUTS = ("input_ids", "attention_mask", "position_ids")


def check_io(session: ort.InferenceSession, manifest: Manifest) -> None:
    """The graph takes and returns the names the manifest promises (BUNDLE.md I/O)."""
    kv = manifest.kv
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    missing = [n for n in (*TOKEN_INPUTS, *kv.past) if n not in inputs]
    missing += [n for n in ("logits", *kv.present) if n not in outputs]
    extra = [n for n in inputs if n not in (*TOKEN_INPUTS, *kv.past)]
    if missing or extra:
        detail = (f"missing {missing}" if missing else "") + (f" unexpected inputs {extra}" if extra else "")
        raise BundleError(f"model I/O does not match manifest kv_cache/io: {detail.strip()}",
                          where=str(manifest.path("model")), fix="re-export and re-package the bundle")
