"""ONNX Runtime sessions for decoder graphs, with options chosen for decoding.

Decoding runs one small graph per token, so thread spin-up and graph
optimisation matter more than peak throughput of one big run.

The bundle's I/O names that every graph shares (TOKEN_INPUTS, the shared-buffer
metadata key) are defined here, once: the compiler imports them from the runtime,
so the contract it writes is the one the runtime reads.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from os import PathLike

import onnxruntime as ort

from slmc.runtime.errors import BundleError, GenerationWarning
from slmc.runtime.manifest import KVSpec, Manifest

CPU = "CPUExecutionProvider"
#: the decoder's token inputs, in graph order (docs/bundle-format.md); every other input is past K/V
TOKEN_INPUTS = ("input_ids", "attention_mask", "position_ids")
#: model metadata set by slmc's ORT fusion pass: past and present K/V may be one buffer
SHARE_BUFFER_KEY = "slmc.kv_share_buffer"
_KV_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}


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
    `session.intra_op.allow_spinning`, and the inter-op pool's too); None keeps ORT's default
    (spin). A bundle's session gets both chosen per machine and model by
    `slmc.runtime.threads.choose_threading`; the compiler's own checks keep ORT's defaults.
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
    if spinning is not None:  # both pools: sequential execution leaves the inter-op one idle, not absent
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    return options


def open_session(model: str | PathLike | bytes, *, providers: Sequence[str] = (CPU,),
                 threads: int | None = None, spinning: bool | None = None) -> ort.InferenceSession:
    """An InferenceSession over a model file or a serialized model; load failures become BundleError.

    The one place a decoder session is made: bundles (`create_session`) and the compiler's
    parity, perplexity and fusion checks all run the graph with these options.
    """
    where = "<serialized model>" if isinstance(model, bytes) else str(model)
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, session_options(threads, spinning=spinning), providers=list(providers))
    except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types for a bad model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"ONNX Runtime cannot load the model: {first}", where=where,
                          fix="re-export the model with an onnxruntime version >= runtime.min_onnxruntime") from None


def create_session(manifest: Manifest, *, threads: int | None = None,
                   spinning: bool | None = None) -> ort.InferenceSession:
    """An InferenceSession for the bundle's model file, on the manifest's execution provider."""
    return open_session(manifest.path("model"), providers=providers_for(manifest), threads=threads,
                        spinning=spinning)


def kv_spec(session: ort.InferenceSession) -> KVSpec:
    """The KV cache as the graph itself declares it: every input after TOKEN_INPUTS is a past,
    every output after logits a present, in graph order.

    For graphs without a manifest (the compiler's checks of the models it builds); a bundle
    reads the same facts from its manifest, and `check_io` holds the two to each other.
    """
    past = [i for i in session.get_inputs() if i.name not in TOKEN_INPUTS]
    present = tuple(o.name for o in session.get_outputs()[1:])
    if not past or len(past) != len(present) or len(past) % 2:
        raise BundleError(f"the graph has {len(past)} past and {len(present)} present K/V tensors; "
                          "a decoder has one key and one value of each per layer",
                          fix="export the model with slmc.export (docs/bundle-format.md I/O)")
    _, heads, _, head_dim = past[0].shape
    if not isinstance(heads, int) or not isinstance(head_dim, int) or past[0].type not in _KV_DTYPES:
        raise BundleError(f"past input {past[0].name} is {past[0].type} {past[0].shape}; the KV cache needs "
                          "fixed heads and head size and a float type",
                          fix="export the model with slmc.export (docs/bundle-format.md I/O)")
    return KVSpec(len(past) // 2, heads, head_dim, _KV_DTYPES[past[0].type], tuple(i.name for i in past), present)


def shares_kv_buffer(session: ort.InferenceSession) -> bool:
    """Whether the model says one buffer may serve as a layer's past and present K/V.

    slmc's ORT fusion pass marks graphs whose every present output comes from
    GroupQueryAttention, which then appends the new K/V in place (its
    past_present_share_buffer mode) instead of copying the past each step. Read once per
    session (reading model metadata is not free).
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
    """The graph takes and returns the names the manifest promises (docs/bundle-format.md I/O)."""
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
