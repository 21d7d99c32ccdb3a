"""Export a Hugging Face causal LM folder to an ONNX decoder with a KV cache (docs/bundle-format.md I/O).

The graph comes from `torch.onnx.export(dynamo=True)` over a thin wrapper whose
forward takes flat tensors and rebuilds a transformers `DynamicCache`, so the
model's own code (any `AutoModelForCausalLM` decoder) runs unchanged. The legacy
TorchScript exporter is kept only as a fallback when dynamo fails; the result
says which one produced the file. The exported onnx_ir model then passes through
`ConformToBundle` with the bundle's I/O contract and onnx.checker as post-conditions
(export.passes), in memory, and is saved once.

Determinism: the same checkpoint gives a byte-identical model.onnx. torch writes
each node's Python stack trace (absolute file paths) into its metadata, which
would tie the bytes to where packages are installed, so those entries are dropped.
"""

from __future__ import annotations

import contextlib
from io import StringIO
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import onnx_ir as ir
import onnx_ir.passes.common as common_passes
import torch

from slmc.errors import StageError
from slmc.export.attention import layer_windows, write_layer_windows
from slmc.export.io_spec import decoder_io, kv_cache_spec, model_summary, past_names, present_names
from slmc.export.onnx_files import data_file, save_model
from slmc.export.passes import DecoderPipeline
from slmc.runtime.session import TOKEN_INPUTS

_DROPPED_NODE_METADATA = ("pkg.torch.onnx.stack_trace",)
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportedModel:
    """What `export_decoder` wrote, described for the manifest and later stages."""

    onnx_path: Path
    data_path: Path | None
    io: dict[str, list[dict[str, Any]]]
    kv_cache: dict[str, Any]
    model: dict[str, Any]
    exporter: Literal["dynamo", "legacy"]
    opset: int
    node_count: int
    seconds: float = 0.0
    fallback_reason: str | None = None


def load_checkpoint(checkpoint_dir: Path) -> torch.nn.Module:
    """The checkpoint as an fp32 eval-mode `AutoModelForCausalLM` (local files only)."""
    from transformers import AutoModelForCausalLM

    if not (Path(checkpoint_dir) / "config.json").is_file():
        raise StageError(
            f"{checkpoint_dir} is not a Hugging Face checkpoint folder (no config.json)",
            where=str(checkpoint_dir),
            fix="point the export at the folder save_pretrained wrote (config.json + weights)",
        )
    model = AutoModelForCausalLM.from_pretrained(
        str(checkpoint_dir), dtype=torch.float32, local_files_only=True
    )
    return model.eval()


class _DecoderWithCache(torch.nn.Module):
    """Flat tensors in, flat tensors out: the signature an ONNX graph can carry."""

    def __init__(self, model: torch.nn.Module, num_layers: int):
        super().__init__()
        self.model = model
        self.num_layers = num_layers

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from transformers import DynamicCache

        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(self.num_layers)]
        # No config: every layer a full DynamicLayer that keeps all positions, as the bundle's
        # cache does; sliding layers then get their window from the model's own mask functions
        # (with the config, transformers' sliding layers would keep only the last `window`).
        cache = DynamicCache(pairs)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
        )
        present = []
        for layer in out.cache.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def _example_inputs(summary: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """Sizes 2/3/4 (never 0 or 1) so torch.export keeps every axis symbolic."""
    batch, seq, past = 2, 3, 4
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, summary["vocab_size"], (batch, seq), generator=gen)
    mask = torch.ones(batch, past + seq, dtype=torch.int64)
    positions = torch.arange(past, past + seq).expand(batch, seq).contiguous()
    kv_shape = (batch, summary["num_key_value_heads"], past, summary["head_dim"])
    kv = [torch.randn(kv_shape, generator=gen) for _ in range(2 * summary["num_hidden_layers"])]
    return (ids, mask, positions, *kv)


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's progress chatter (warnings, 'torchvision is not installed' logs).

    The result is judged by onnx.checker, the I/O contract and the parity check instead.
    """
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        registration.setLevel(level)


def _export_dynamo(wrapper, args, input_names, output_names, opset) -> ir.Model:
    dim = torch.export.Dim
    batch, seq = dim("batch", min=1), dim("sequence", min=1)
    past, total = dim("past_sequence", min=0), dim("total_sequence", min=1)
    kv = tuple({0: batch, 2: past} for _ in args[3:])
    shapes = ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq}, kv)
    with _quiet(), contextlib.redirect_stdout(StringIO()):
        program = torch.onnx.export(
            wrapper,
            args,
            dynamic_shapes=shapes,
            input_names=input_names,
            output_names=output_names,
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    return program.model


def _export_legacy(wrapper, args, input_names, output_names, opset) -> ir.Model:
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in TOKEN_INPUTS}
    axes["attention_mask"] = {0: "batch", 1: "total_sequence"}
    axes["logits"] = {0: "batch", 1: "sequence"}
    axes.update({n: {0: "batch", 2: "past_sequence"} for n in input_names[3:]})
    axes.update({n: {0: "batch", 2: "total_sequence"} for n in output_names[1:]})
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        path = Path(tmp) / "legacy.onnx"
        torch.onnx.export(
            wrapper,
            args,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
        model = ir.load(path)
        ir.external_data.load_to_model(model)  # own the weights before tmp goes
    return model


_TOTAL_EXPRESSIONS = {"past_sequence+sequence", "sequence+past_sequence"}


class ConformToBundle(ir.passes.InPlacePass):
    """Name the present length `total_sequence` and drop path-dependent node metadata.

    Dynamo names that axis `past_sequence + sequence`; the bundle format calls it
    `total_sequence` (the attention_mask length, which it equals).
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        for value in model.graph.outputs[1:]:
            dims = list(value.shape)
            if isinstance(dims[2], ir.SymbolicDim) and str(dims[2].value).replace(" ", "") in _TOTAL_EXPRESSIONS:
                dims[2] = ir.SymbolicDim("total_sequence")
                value.shape = ir.Shape(dims)
        for node in model.graph.all_nodes():
            for key in _DROPPED_NODE_METADATA:
                node.metadata_props.pop(key, None)
        return ir.passes.PassResult(model, modified=True)


#: attention kinds whose result is exact with a cache that keeps every past position
#: (a sliding window is a mask over that cache)
EXPORTABLE_LAYER_TYPES = frozenset({"full_attention", "sliding_attention"})


def _check_supported(config: Any) -> None:
    if getattr(config, "use_bidirectional_attention", False):
        raise StageError(
            "use_bidirectional_attention is set: the model attends to later tokens too (an embedding "
            "model), which a decoder with a KV cache cannot serve",
            where="config.json: use_bidirectional_attention", fix="export a causal language model")
    layer_types = getattr(config, "layer_types", None) or []
    other = sorted(set(layer_types) - EXPORTABLE_LAYER_TYPES)
    if other:
        raise StageError(
            f"layer types {other} are not supported: the bundle's KV cache keeps every past "
            "position of full or sliding-window attention, not the state other layer kinds keep",
            where="config.json: layer_types",
            fix="export a model whose layers use full_attention or sliding_attention",
        )


def _layer_windows(config: Any) -> list[int | None]:
    """Per layer, its sliding window or None (export.attention), from the family registry.

    An architecture outside the registry is exported only without windows: slmc cannot tell
    which of its layers a `sliding_window` applies to.
    """
    from slmc.families import UnsupportedArchitecture

    data = config.to_dict()
    try:
        return layer_windows(data)
    except UnsupportedArchitecture:
        if data.get("sliding_window") is None and not data.get("layer_types"):
            return [None] * int(config.num_hidden_layers)
        raise StageError(
            f"model_type {data.get('model_type')!r} declares a sliding window, but slmc knows which layers "
            "a window applies to only for its families", where="config.json: sliding_window",
            fix="export a checkpoint of a supported family (slmc.families)") from None


def _summarize(exc: Exception) -> str:
    """One line for a torch export failure: its `<class ...>: ...` summary line if it has one."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    summary = next((line for line in lines if line.startswith("<class")), lines[0] if lines else "")
    return f"{type(exc).__name__}: {summary}"[:500]


def _run_exporter(exporter, fallback, wrapper, args, names, opset) -> tuple[ir.Model, str, str | None]:
    if exporter == "legacy":
        return _export_legacy(wrapper, args, *names, opset), "legacy", None
    try:
        return _export_dynamo(wrapper, args, *names, opset), "dynamo", None
    except Exception as exc:  # noqa: BLE001 - any dynamo failure may be rescued by the fallback
        if not fallback:
            raise StageError(
                f"torch.onnx.export(dynamo=True) failed: {exc}",
                fix="pass exporter='legacy' to try the TorchScript exporter",
            ) from exc
        reason = _summarize(exc)
        _log.warning("dynamo export failed (%s); falling back to the legacy exporter", reason)
        return _export_legacy(wrapper, args, *names, opset), "legacy", reason


def export_decoder(
    checkpoint_dir: Path,
    out_dir: Path,
    *,
    opset: int = 18,
    external_data: bool | None = None,
    exporter: Literal["dynamo", "legacy"] = "dynamo",
    fallback: bool = True,
) -> ExportedModel:
    """Write out_dir/model.onnx (+ model.onnx.data) for the checkpoint; check it; describe it.

    external_data=None stores weights beside the graph once they pass ~100 MB.
    exporter="dynamo" falls back to the legacy exporter on failure unless fallback=False;
    `ExportedModel.exporter` and `.fallback_reason` say what happened.
    """
    start = time.perf_counter()
    model = load_checkpoint(Path(checkpoint_dir))
    _check_supported(model.config)
    parameters = sum(p.numel() for p in model.parameters())
    summary = model_summary(model.config, parameters)
    layers, kv_heads, head_dim = summary["num_hidden_layers"], summary["num_key_value_heads"], summary["head_dim"]
    expected = decoder_io(
        num_layers=layers, num_key_value_heads=kv_heads, head_dim=head_dim, vocab_size=summary["vocab_size"]
    )
    names = (list(TOKEN_INPUTS) + past_names(layers), ["logits"] + present_names(layers))
    wrapper = _DecoderWithCache(model, layers).eval()
    with torch.no_grad():
        graph, used, reason = _run_exporter(exporter, fallback, wrapper, _example_inputs(summary), names, opset)
    checks = DecoderPipeline([ConformToBundle(), common_passes.CheckerPass()], where="export",
                             fix="report this as an slmc bug with the model's config.json", expected_io=expected)
    graph = checks.run(graph)
    write_layer_windows(graph, _layer_windows(model.config))
    onnx_path = Path(out_dir) / "model.onnx"
    external = save_model(graph, onnx_path, external=external_data)
    return ExportedModel(
        onnx_path=onnx_path,
        data_path=data_file(onnx_path) if external else None,
        io=expected,
        kv_cache=kv_cache_spec(num_layers=layers, num_key_value_heads=kv_heads, head_dim=head_dim),
        model=summary,
        exporter=used,
        opset=opset,
        node_count=len(graph.graph),
        seconds=round(time.perf_counter() - start, 3),
        fallback_reason=reason,
    )
