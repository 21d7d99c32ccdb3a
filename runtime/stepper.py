"""One forward pass of the decoder per call, carrying the KV cache between calls.

Three interchangeable loops; each instance serves one generation (it owns the cache).
- `NumpyStepper`: session.run over numpy arrays; the graph concatenates past and new K/V
  (docs/bundle-format.md I/O), so the loop never copies the cache in Python.
- `BoundStepper`: IO binding, presents kept as OrtValues; pays off where presents would
  otherwise cross a device boundary (CUDA).
- `SharedStepper`: for graphs fused for ORT (slmc.export.fuse; model metadata
  `slmc.kv_share_buffer = 1`), one preallocated buffer per layer bound as both past and
  present, so GroupQueryAttention appends the new K/V in place instead of the graph copying
  the whole past into a new present each step.
"auto" picks SharedStepper on CPU for such graphs, else NumpyStepper on CPU (on standard-op
graphs it beat IO binding: fewer Python->C++ calls per step) and BoundStepper elsewhere
(measurements: bench/results/notes.md).

Calling a stepper gives the last position's logits (what sampling needs); `logits` gives
every position's, which is how the compiler's parity, perplexity and fusion checks run the
graphs it builds: through these same loops.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike

import numpy as np
import onnxruntime as ort

from slmc.runtime.errors import BundleError
from slmc.runtime.manifest import KVSpec
from slmc.runtime.session import CPU, TOKEN_INPUTS, kv_spec, open_session, shares_kv_buffer

LOOPS = ("auto", "numpy", "iobinding", "shared")
_DEVICES = {"CUDAExecutionProvider": "cuda", "ROCMExecutionProvider": "cuda", "DmlExecutionProvider": "dml"}


class _Stepper:
    """What every loop shares: calling it gives the last position's logits."""

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
        """Logits of the last position, [batch, vocab] float32; advances the cache."""
        return self.logits(input_ids, attention_mask, position_ids)[:, -1, :]

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
        """Logits of every new position, [batch, sequence, vocab] float32; advances the cache."""
        raise NotImplementedError

    def rollback(self, length: int) -> None:
        """Keep the cache's first `length` positions (speculative decoding drops rejected drafts)."""
        raise NotImplementedError


class NumpyStepper(_Stepper):
    """session.run over numpy arrays.

    past: the cache to start from (one array per `kv.past` name); None starts empty. The
    compiler's checks start from random caches to compare two graphs mid-generation.
    """

    def __init__(self, session: ort.InferenceSession, kv: KVSpec, batch: int,
                 past: Sequence[np.ndarray] | None = None):
        self.session, self.kv = session, kv
        if past is None:
            empty = np.zeros((batch, kv.num_heads, 0, kv.head_dim), dtype=np.dtype(kv.dtype))
            past = [empty] * len(kv.past)
        elif len(past) != len(kv.past):
            raise ValueError(f"past has {len(past)} arrays, the graph {len(kv.past)} past inputs")
        self.past: list = [np.asarray(p, dtype=np.dtype(kv.dtype)) for p in past]
        self.run_seconds = 0.0  # time inside ORT, for profiling the loop's own overhead

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        feeds.update(zip(self.kv.past, self.past))
        logits, *self.past = _timed_run(self, self.session.run, None, feeds)
        return logits.astype(np.float32, copy=False)

    def rollback(self, length: int) -> None:
        """A view of each past; the graph's concat copies it into the next present anyway."""
        self.past = [p[:, :, :length] for p in self.past]


class BoundStepper(_Stepper):
    """run_with_iobinding; presents stay on the provider's device as the next past."""

    def __init__(self, session: ort.InferenceSession, kv: KVSpec, batch: int):
        self.session, self.kv = session, kv
        self.device = _DEVICES.get(session.get_providers()[0], "cpu")
        self.binding = session.io_binding()
        empty = np.zeros((batch, kv.num_heads, 0, kv.head_dim), dtype=np.dtype(kv.dtype))
        for name in kv.past:
            self.binding.bind_cpu_input(name, empty)
        self._feeds: list[np.ndarray] = []  # keep bound host arrays alive until the run
        self.run_seconds = 0.0

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
        binding = self.binding
        self._feeds = [np.ascontiguousarray(a) for a in (input_ids, attention_mask, position_ids)]
        for name, array in zip(TOKEN_INPUTS, self._feeds):
            binding.bind_cpu_input(name, array)
        binding.bind_output("logits", "cpu")
        for name in self.kv.present:
            binding.bind_output(name, self.device)
        _timed_run(self, self.session.run_with_iobinding, binding)
        logits, *present = binding.get_outputs()
        for name, value in zip(self.kv.past, present):
            binding.bind_ortvalue_input(name, value)
        self._present = present
        return logits.numpy().astype(np.float32, copy=False)

    def rollback(self, length: int) -> None:
        """Through host memory (OrtValue has no slicing): a copy of the kept cache per call."""
        self._kept = [np.ascontiguousarray(v.numpy()[:, :, :length]) for v in self._present]
        for name, array in zip(self.kv.past, self._kept):
            self.binding.bind_cpu_input(name, array)


class SharedStepper(_Stepper):
    """run_with_iobinding with one preallocated buffer per layer bound as past and present.

    Only for graphs that declare it (`shares_kv_buffer`): there, GroupQueryAttention reads
    the cache length from attention_mask and writes the new K/V into the buffer in place.
    `capacity` is the longest attention_mask this generation will pass (prompt + new tokens).
    Decode logits land in a preallocated array (the returned logits are a view of it, valid
    until the next call), and token/position arrays the caller refills in place are bound
    once, so a decode step binds one input (the mask) and allocates no output. It always
    starts from an empty cache.
    """

    def __init__(self, session: ort.InferenceSession, kv: KVSpec, batch: int, capacity: int):
        self.session, self.kv, self.capacity = session, kv, capacity
        self.binding = session.io_binding()
        self.binding.bind_output("logits", "cpu")  # first: get_outputs() follows binding order
        shape = (batch, kv.num_heads, capacity, kv.head_dim)
        self._cache = [ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, dtype=np.dtype(kv.dtype)))
                       for _ in kv.past]
        for past, present, value in zip(kv.past, kv.present, self._cache):
            self.binding.bind_ortvalue_input(past, value)
            self.binding.bind_ortvalue_output(present, value)
        vocab = session.get_outputs()[0].shape[-1]
        self._step_logits = np.zeros((batch, 1, vocab), np.float32) if isinstance(vocab, int) else None
        self._bound_step = False
        self._stable: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._feeds: list[np.ndarray] = []  # keep bound host arrays alive until the run
        self._mask = np.zeros((batch, 0), np.int64)
        self.run_seconds = 0.0

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
        """As for every stepper; a decode step's logits are the step buffer itself, valid until the next call."""
        if attention_mask.shape[1] > self.capacity:
            raise BundleError(f"attention_mask has {attention_mask.shape[1]} positions, the KV buffer "
                              f"{self.capacity}", fix="start a new generation with a larger capacity")
        binding = self.binding
        step = input_ids.shape[1] == 1 and self._step_logits is not None
        if step:  # one token a row: only the growing mask is bound anew, unless the caller swaps arrays
            if not self._bound_step:
                binding.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(self._step_logits))
                self._bound_step, self._stable = True, {}
            self._bind_stable("input_ids", input_ids)
            self._bind_stable("position_ids", position_ids)
            self._mask = np.ascontiguousarray(attention_mask)
            binding.bind_cpu_input("attention_mask", self._mask)
        else:
            self._bound_step = False
            self._feeds = [np.ascontiguousarray(a) for a in (input_ids, attention_mask, position_ids)]
            for name, array in zip(TOKEN_INPUTS, self._feeds):
                binding.bind_cpu_input(name, array)
            binding.bind_output("logits", "cpu")  # a fresh array: a prompt's length varies
        _timed_run(self, self.session.run_with_iobinding, binding)
        if step:  # the step buffer: valid until the next call rewrites it
            return self._step_logits
        return binding.get_outputs()[0].numpy().astype(np.float32, copy=False)

    def rollback(self, length: int) -> None:
        """Nothing to do: GroupQueryAttention reads the cache length from the next attention_mask,
        so positions past `length` are simply overwritten by the next call."""

    def _bind_stable(self, name: str, array: np.ndarray) -> None:
        """Bind `array`'s memory itself; when the caller passes the same array again (refilled in
        place, as Generation does), nothing is copied or bound for it."""
        held = self._stable.get(name)
        if held is not None and held[0] is array:
            return
        data = array if array.dtype == np.int64 and array.flags.c_contiguous else np.ascontiguousarray(array, np.int64)
        self.binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(data))
        self._stable[name] = (array, data)  # keeps both alive: ORT reads `data`'s memory at each run


def _timed_run(stepper, run, *args):
    """run(*args), its seconds added to stepper.run_seconds (time inside ORT, for profiling the
    loop's own overhead); any ORT failure becomes one BundleError."""
    start = time.perf_counter()
    try:
        result = run(*args)
    except Exception as exc:  # noqa: BLE001 - ORT's error types share no useful base
        raise _run_failed(exc) from None
    stepper.run_seconds += time.perf_counter() - start
    return result


def _run_failed(exc: Exception) -> BundleError:
    lines = [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    return BundleError(f"ONNX Runtime failed while running the model: {lines[0][:400]}",
                       fix="check that the bundle's model matches its manifest (re-package it)")


def resolve_loop(session: ort.InferenceSession, loop: str = "auto") -> str:
    """"numpy", "iobinding" or "shared": what "auto" means for this session.

    auto: "shared" for graphs that declare a shareable KV buffer on CPU, else "numpy" on CPU
    and "iobinding" on other providers. An explicit "shared" on a graph without the
    declaration is an error (its attention would not read the cache length from the mask).
    """
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}, got {loop!r}")
    cpu = session.get_providers()[0] == CPU
    if loop == "auto":
        return ("shared" if shares_kv_buffer(session) else "numpy") if cpu else "iobinding"
    if loop == "shared" and not shares_kv_buffer(session):
        raise BundleError("loop 'shared' needs a graph fused for ONNX Runtime (GroupQueryAttention, "
                          "model metadata slmc.kv_share_buffer=1)", fix="use loop 'auto', 'numpy' or 'iobinding'")
    return loop


def make_stepper(session: ort.InferenceSession, kv: KVSpec, batch: int, loop: str = "auto",
                 capacity: int | None = None):
    """A fresh stepper (empty cache) for one generation of `batch` rows.

    capacity: the longest attention_mask of the generation (prompt + new tokens); the
    shared-buffer loop needs it, and without it "auto" falls back to the numpy loop.
    """
    kind = resolve_loop(session, loop)
    if kind == "shared":
        if capacity is not None:
            return SharedStepper(session, kv, batch, capacity)
        if loop == "shared":
            raise ValueError("the shared-buffer loop needs the generation's capacity")
        kind = "numpy"
    return (NumpyStepper if kind == "numpy" else BoundStepper)(session, kv, batch)


@dataclass(frozen=True)
class Decoder:
    """A decoder graph opened without a bundle: its session and the KV cache it declares.

    How the compiler runs the models it builds (parity, perplexity, fusion checks) before
    they are packaged: the same sessions and steppers a bundle gets, minus the manifest.
    """

    session: ort.InferenceSession
    kv: KVSpec

    @classmethod
    def open(cls, model: str | PathLike | bytes, *, providers: Sequence[str] = (CPU,),
             threads: int | None = None) -> Decoder:
        """A model file or a serialized model."""
        session = open_session(model, providers=providers, threads=threads)
        return cls(session, kv_spec(session))

    @property
    def vocab(self) -> int:
        return int(self.session.get_outputs()[0].shape[-1])

    def stepper(self, batch: int, *, loop: str = "auto", capacity: int | None = None,
                past: Sequence[np.ndarray] | None = None):
        """A fresh stepper as `make_stepper` chooses it, or a NumpyStepper starting from `past`."""
        if past is not None:
            if loop not in ("auto", "numpy"):
                raise ValueError(f"a starting cache runs on the numpy loop, not {loop!r}")
            return NumpyStepper(self.session, self.kv, batch, past=past)
        return make_stepper(self.session, self.kv, batch, loop, capacity)
