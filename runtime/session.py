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
#: model metadata set by slmc's ORT fusion pass: past and present K/V may be one buffer
SHARE_BUFFER_KEY = "slmc.kv_share_buffer"


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


def session_options(threads: int | None = None, *, spinning: bool | None = None) -> ort.SessionOptions:
    """All graph optimisations, sequential execution, intra-op threads (None: ORT's default).

    spinning=False makes idle intra-op threads block instead of busy-waiting (ORT's
    `session.intra_op.allow_spinning`); None keeps ORT's default (spin). With 2 threads on
    a 2-core machine shared with other work, spinning cost 2-7x in decode wall time
    (measured); on an idle machine spinning may win, so the default stays ORT's.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 4  # fatal only: every ORT error also reaches us as an exception, rendered in one line
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


def create_session(manifest: Manifest, *, threads: int | None = None,
                   spinning: bool | None = None) -> ort.InferenceSession:
    """An InferenceSession for the bundle's model file; load failures become BundleError."""
    path = manifest.path("model")
    try:
        return ort.InferenceSession(str(path), session_options(threads, spinning=spinning),
                                    providers=providers_for(manifest))
    except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types for a bad model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"ONNX Runtime cannot load the model: {first}", where=str(path),
                          fix="re-export the model with an onnxruntime version >= runtime.min_onnxruntime") from None


TOKEN_INPUTS = ("input_ids", "attention_mask", "position_ids")


def shares_kv_buffer(session: ort.InferenceSession) -> bool:
    """Whether the model says one buffer may serve as a layer's past and present K/V.

    slmc's ORT fusion pass marks graphs whose every present output comes from
    GroupQueryAttention, which then appends the new K/V in place (its
    past_present_share_buffer mode) instead of copying the past each step. Read once per
    session (reading model metadata costs ~0.4 ms).
    """
    cached = getattr(session, "_slmc_shares_kv_buffer", None)
    if cached is None:
        try:
            cached = session.get_modelmeta().custom_metadata_map.get(SHARE_BUFFER_KEY) == "1"
        except Exception:  # noqa: BLE001 - a provider without model metadata
            cached = False
        session._slmc_shares_kv_buffer = cached
    return cached


def check_io(session: ort.InferenceSession, manifest: Manifest) -> None:
    """The graph takes and returns the names the manifest promises (docs/bundle-format.md)."""
    kv, vocab = manifest.kv, manifest.data["model"]["vocab_size"]
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    problems = [f"missing input {n}" for n in (*TOKEN_INPUTS, *kv.past) if n not in inputs]
    problems += [f"missing output {n}" for n in ("logits", *kv.present) if n not in outputs]
    problems += [f"unexpected input {n}" for n in inputs if n not in (*TOKEN_INPUTS, *kv.past)]
    logits_vocab = outputs["logits"].shape[-1] if "logits" in outputs else None
    if isinstance(logits_vocab, int) and logits_vocab != vocab:
        problems.append(f"logits have {logits_vocab} entries, model.vocab_size is {vocab}")
    if problems:
        raise BundleError("model I/O does not match the manifest: " + "; ".join(problems),
                          where=str(manifest.path("model")), fix="re-export and re-package the bundle")
