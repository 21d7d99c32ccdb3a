"""The bundle's tokenizer.json through the `tokenizers` library, plus streaming text.

`TextStream` turns generated ids into text pieces as they arrive. It uses
tokenizers' DecodeStream, which holds back a byte-level BPE piece that ends inside
a UTF-8 character, so a piece is always complete text. It also cuts the text at the
first stop string and holds back any tail that could still become one, so the
concatenated pieces always equal the non-streaming text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

from slmc.runtime.errors import BundleError


class TextTokenizer:
    """encode/decode with the bundle's special-token rules (the tokenizer's post-processor decides BOS)."""

    def __init__(self, path: str | Path):
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception on bad JSON
            raise BundleError(f"cannot load tokenizer: {exc}", where=str(path),
                              fix="re-package the bundle with a tokenizers-format tokenizer.json") from None

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


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
        piece = self._decoder.step(self.tokenizer.tokenizer, int(token_id))
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
