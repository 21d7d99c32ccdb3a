"""A safetensors file written row by row: the tokenize stage's output, streamed to disk.

The `safetensors` library writes a file from tensors held whole in memory; a corpus's
rows need not fit there. The format is simple and documented (an 8-byte little-endian
header length, a JSON header of dtype/shape/byte offsets, then the raw bytes), so each
tensor's rows go to a temporary file as they come and the file is assembled at the end.
`safetensors.numpy.load_file` (and train.py's `safetensors.torch.load_file`) read it.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np

COLUMNS = (("input_ids", np.int32, "I32"), ("loss_mask", np.uint8, "U8"), ("attention_mask", np.uint8, "U8"))


class RowWriter:
    """Append [n, row_len] blocks of input_ids, loss_mask, attention_mask; `close` writes the file."""

    def __init__(self, path: Path, row_len: int, metadata: dict[str, str]):
        self.path, self.row_len, self.metadata, self.rows = Path(path), row_len, metadata, 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = tempfile.TemporaryDirectory(dir=self.path.parent, prefix=".rows-")
        self._parts = [open(Path(self._tmp.name) / name, "wb") for name, _, _ in COLUMNS]

    def add(self, input_ids, loss_mask, attention_mask) -> None:
        arrays = (input_ids, loss_mask, attention_mask)
        n = len(arrays[0])
        for (name, dtype, _), array, part in zip(COLUMNS, arrays, self._parts):
            array = np.ascontiguousarray(array, dtype=dtype)
            assert array.shape == (n, self.row_len), (name, array.shape)
            part.write(array.tobytes())
        self.rows += n

    def __enter__(self) -> "RowWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            for part in self._parts:
                part.close()
            if exc_type is None:
                self._assemble()
        finally:
            self._tmp.cleanup()

    def _assemble(self) -> None:
        header, offset = {"__metadata__": {k: str(v) for k, v in self.metadata.items()}}, 0
        for name, dtype, code in COLUMNS:
            size = self.rows * self.row_len * np.dtype(dtype).itemsize
            header[name] = {"dtype": code, "shape": [self.rows, self.row_len], "data_offsets": [offset, offset + size]}
            offset += size
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as out:
            out.write(struct.pack("<Q", len(text)))
            out.write(text)
            for part in self._parts:
                with open(part.name, "rb") as src:
                    shutil.copyfileobj(src, out)
        os.replace(tmp, self.path)
