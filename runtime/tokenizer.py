"""The bundle's tokenizer.json through the `tokenizers` library, plus streaming text.

`TextStream` turns generated ids into text pieces as they arrive. It uses
tokenizers' DecodeStream, which holds back a byte-level BPE piece that ends inside
a UTF-8 character, so a piece is always complete text. It also cuts the text at the
first stop string and holds back any tail that could still become one, so the
concatenated pieces always equal the non-streaming text.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

from slmc.runtime.errors import BundleError, TokenizerError

_quiet_panics = False


@contextmanager
def quiet_panics() -> Iterator[None]:
    """While active, Rust's panic report (written straight to file descriptor 2 by the panic
    hook, before Python sees a PanicException) is discarded, so a CLI prints one line.

    For single-threaded callers only (the CLI): each tokenizer call then points fd 2 at
    /dev/null for its duration, which would also swallow other threads' stderr.
    """
    global _quiet_panics
    saved, _quiet_panics = _quiet_panics, True
    try:
        yield
    finally:
        _quiet_panics = saved


@contextmanager
def _native_call(where: str) -> Iterator[None]:
    """Turn a panic inside the tokenizers library into a TokenizerError.

    pyo3 raises a panic as PanicException, a BaseException (not an Exception), so
    `except Exception` misses it; an input that makes a tokenizer.json's regex exceed
    Oniguruma's retry limit ends this way.
    """
    saved = _mute_fd2() if _quiet_panics else None
    try:
        yield
    except BaseException as exc:
        if not _is_panic(exc):
            raise
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "retry-limit" in reason or "Regex" in reason:
            fix = ("this input makes a regular expression in tokenizer.json backtrack past Oniguruma's limit: "
                   "shorten or vary the input, or re-package the bundle with a tokenizer whose patterns do not "
                   "backtrack (nested repetition such as (a|a?)+)")
        else:
            fix = "report the input and the bundle's tokenizer.json to the tokenizers project"
        raise TokenizerError(f"the tokenizer failed on this input: {reason}", where=where, fix=fix) from None
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)


def _is_panic(exc: BaseException) -> bool:
    """pyo3's PanicException (module pyo3_runtime, not importable by name)."""
    return type(exc).__name__ == "PanicException"


def _mute_fd2() -> int | None:
    """Point fd 2 at /dev/null; return a duplicate of the old one to restore (None if fd 2 is closed)."""
    try:
        saved = os.dup(2)
    except OSError:
        return None
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    return saved


class TextTokenizer:
    """encode/decode with the bundle's special-token rules (the tokenizer's post-processor decides BOS)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        try:
            self.tokenizer = Tokenizer.from_file(self.path)
        except BaseException as exc:  # tokenizers raises a bare Exception on bad JSON, or panics
            if not isinstance(exc, Exception) and not _is_panic(exc):
                raise
            raise BundleError(f"cannot load tokenizer: {exc}", where=self.path,
                              fix="re-package the bundle with a tokenizers-format tokenizer.json") from None

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids; add_special_tokens=False for text that already holds them (a rendered chat template)."""
        with _native_call(self.path):
            return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int]) -> str:
        with _native_call(self.path):
            return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def step(self, decoder: DecodeStream, token_id: int) -> str | None:
        """One DecodeStream step (the streamed text's next piece, or None while a character is incomplete)."""
        with _native_call(self.path):
            return decoder.step(self.tokenizer, token_id)


def find_stop(text: str, stop: Sequence[str], start: int = 0) -> int:
    """Index of the earliest stop string found at or after start (searching from start), or -1."""
    hits = [i for i in (text.find(s, start) for s in stop) if i >= 0]
    return min(hits) if hits else -1


def final_text(tokenizer: TextTokenizer, ids: Sequence[int], stop: Sequence[str]) -> str:
    """The completion's text: decoded ids, cut before the first stop string."""
    text = tokenizer.decode(ids)
    cut = find_stop(text, stop)
    return text if cut < 0 else text[:cut]


class TextStream:
    """Incremental text of one generated row: push ids, take complete pieces."""

    def __init__(self, tokenizer: TextTokenizer, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self._longest = max((len(s) for s in self.stop), default=0)
        self._decoder = DecodeStream(skip_special_tokens=True)
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def push(self, token_id: int) -> None:
        """Add one generated id; sets `stopped` when the text now contains a stop string."""
        if self.stopped:
            return
        piece = self.tokenizer.step(self._decoder, int(token_id))
        if not piece:
            return
        before = len(self.text)
        self.text += piece
        if self.stop:
            cut = find_stop(self.text, self.stop, max(0, before - self._longest + 1))
            if cut >= 0:
                self.text, self.stopped = self.text[:cut], True

    def take(self) -> str:
        """Text not yet returned, except a tail that may still grow into a stop string."""
        end = len(self.text) if self.stopped else len(self.text) - self._held()
        piece = self.text[self.emitted:end]
        self.emitted = max(self.emitted, end)
        return piece

    def finish(self, final: str) -> str:
        """The rest of the final text (what DecodeStream still held, e.g. an incomplete character)."""
        if not final.startswith(self.text[: self.emitted]):
            raise AssertionError("streamed text diverged from the final text")  # a bug, not user error
        piece = final[self.emitted:]
        self.emitted = len(final)
        return piece

    def _held(self) -> int:
        for size in range(min(self._longest - 1, len(self.text)), 0, -1):
            tail = self.text[-size:]
            if any(s.startswith(tail) for s in self.stop):
                return size
        return 0
