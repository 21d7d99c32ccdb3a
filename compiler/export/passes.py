"""The export steps as passes over one onnx_ir model, with the bundle's contract as post-conditions.

A step (export, optimize, compress, prepare for TensorRT) loads its input once, runs
its passes over the model in memory and saves the result once: the disk is touched at
stage boundaries only, and inside a pass only where a library takes nothing but files
(each such pass says so). `DecoderPipeline` is onnx_ir's PassManager with the two
post-conditions every step must meet:

- the bundle's I/O contract: inputs and outputs exactly as before the step, or as the
  step declares them (the export's `decoder_io`; an fp16 cast's KV dtype);
- parity, given a reference graph: the result's logits within tolerance of it
  (export.graph_parity, run through slmc.runtime's steppers).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import onnx_ir as ir

from slmc.errors import SlmcError, StageError
from slmc.runtime.errors import SlmcRuntimeError
from slmc.runtime.session import SHARE_BUFFER_KEY

from .attention import read_layer_windows
from .graph_parity import GraphParity, compare_graphs, gates_for
from .io_spec import io_mismatches, read_io
from .onnx_files import op_histogram, ort_source

IO = dict[str, list[dict[str, Any]]]


class DecoderPipeline(ir.passes.PassManager):
    """Passes over one decoder graph, then the bundle's post-conditions (module docstring).

    where / fix: what a failure names and suggests. expected_io: the I/O the result must
    have, as a dict or computed from the input's; None: unchanged. reference: the graph
    the result must compute the same logits as (None: no parity check); parity_options:
    extra compare_graphs arguments (the shared-buffer case and tolerances follow from the
    result's metadata and ops). `parity` holds the comparison after a run.
    """

    def __init__(self, passes: Sequence[ir.passes.PassBase], *, where: str, fix: str,
                 expected_io: IO | Callable[[IO], IO] | None = None,
                 reference: str | PathLike | None = None, parity_options: Mapping[str, Any] | None = None):
        super().__init__(passes, steps=1)
        self.where, self.fix = where, fix
        self.expected_io, self.reference = expected_io, reference
        self.parity_options = dict(parity_options or {})
        self.parity: GraphParity | None = None
        self._io_before: IO | None = None

    def run(self, model: ir.Model) -> ir.Model:
        """The passes' result, post-conditions met; a failure is a StageError naming the step."""
        try:
            return self(model).model
        except (ir.passes.PassError, ir.passes.InvariantError) as exc:
            error = _slmc_error(exc)
            if error is None:
                raise _failed(exc, self.where, self.fix) from exc
            error.__suppress_context__ = True  # the wrappers add nothing to the pass's own error
            raise error

    def requires(self, model: ir.Model) -> None:
        self._io_before = read_io(model)

    def ensures(self, model: ir.Model) -> None:
        expected = self.expected_io
        expected = self._io_before if expected is None else (expected(self._io_before) if callable(expected) else expected)
        problems = io_mismatches(read_io(model), expected)
        if problems:
            raise StageError("the graph does not match the bundle I/O contract: " + "; ".join(problems),
                             where=self.where, fix="report this as an slmc bug with the model's config.json")
        if self.reference is not None:
            self.parity = self._compare(model)
            if not self.parity.ok:
                raise StageError(f"the result's logits differ from its input's: {self.parity.describe()}",
                                 where=self.where, fix=self.fix)

    def _compare(self, model: ir.Model) -> GraphParity:
        windows = [w for w in read_layer_windows(model) if w is not None]
        options = {"shared_buffer": model.metadata_props.get(SHARE_BUFFER_KEY) == "1",
                   "window": max(windows) if windows else None,
                   **gates_for(op_histogram(model)), **self.parity_options}
        with tempfile.TemporaryDirectory(prefix="slmc-parity-") as tmp:
            return compare_graphs(self.reference, ort_source(model, Path(tmp)), **options)


def _slmc_error(exc: BaseException) -> SlmcError | None:
    """The slmc error a pass raised, inside onnx_ir's PassError / InvariantError wrappers."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, SlmcError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _failed(exc: BaseException, where: str, fix: str) -> StageError:
    """One StageError for anything else a pass raised (a rewrite rule tripping on an unexpected
    pattern, a library failing), naming the innermost exception."""
    root, seen = exc, {id(exc)}
    while (inner := root.__cause__ or root.__context__) is not None and id(inner) not in seen:
        root = inner
        seen.add(id(inner))
    text = root.message if isinstance(root, SlmcRuntimeError) else str(root)  # the runtime's own errors read as one line
    first = (text.strip().splitlines() or [""])[0]
    return StageError(f"{type(root).__name__}: {first}"[:500], where=where, fix=fix)
