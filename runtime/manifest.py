"""manifest.json: its schema (docs/bundle-format.md, schema_version 1), file hashing, and a typed view.

The compiler's package stage fills "hashes" with `with_hashes` and serialises with
`manifest_json`, which also stamps `manifest_sha256`, the manifest's checksum of
itself; `read_manifest` checks it first. Writer and reader share one definition
of all three.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from slmc.runtime.errors import BundleError

SCHEMA_VERSION = 1
FORMAT = "slmc-bundle"
MANIFEST_NAME = "manifest.json"
CHECKSUM_KEY = "manifest_sha256"
RUNTIMES = ("ort", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")
KV_DTYPES = ("float32", "float16")


class OneOf(tuple):
    """A schema leaf that must be one of a closed set of strings."""


_N = type(None)
SCHEMA: dict[str, Any] = {
    "schema_version": int,
    "format": str,
    "name": str,
    "device": {"name": str, "isa": str, "arch": str},
    "runtime": {"name": OneOf(RUNTIMES), "version": str, "execution_provider": str, "min_onnxruntime": str},
    "precision": OneOf(PRECISIONS),
    "model": {
        "architecture": str, "vocab_size": int, "num_hidden_layers": int, "num_attention_heads": int,
        "num_key_value_heads": int, "head_dim": int, "hidden_size": int,
        "max_position_embeddings": int, "parameters": int,
    },
    "files": {"model": str, "tokenizer": str},
    "io": {"inputs": list, "outputs": list},
    "kv_cache": {
        "layout": str, "num_layers": int, "num_key_value_heads": int, "head_dim": int,
        "dtype": OneOf(KV_DTYPES), "past_key": str, "past_value": str, "present_key": str, "present_value": str,
    },
    "limits": {"max_seq_len": int, "max_batch_size": int},
    "tokens": {"bos_token_id": (int, _N), "eos_token_ids": list, "pad_token_id": int},
    "generation": {
        "max_new_tokens": int, "do_sample": bool, "temperature": (float, int), "top_k": int,
        "top_p": (float, int), "repetition_penalty": (float, int),
    },
    "metrics": dict,
    "provenance": {"config_sha256": str, "seed": int, "versions": dict, "created": str},
    "hashes": dict,
}
"""Every required key and its type; nested dicts are sections. Unknown keys are ignored (they
are still covered by manifest_sha256, which `checksum_problems` requires and checks)."""

DRAFT_SCHEMA: dict[str, Any] = {key: SCHEMA[key] for key in ("model", "io", "kv_cache")} | {"files": {"model": str}}
"""The optional `draft` section: a second, smaller decoder for speculative decoding, with the
target's I/O contract and tokenizer (docs/bundle-format.md, draft)."""


MAX_MANIFEST_BYTES = 8 * 1024 * 1024
"""manifest.json is a few KiB (its largest part is one hash per file); a larger one is not
slmc's, and reading it whole could exhaust memory (a link to /dev/zero never ends)."""

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
_KINDS = ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "folder"), (stat.S_ISLNK, "symbolic link"),
          (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"))
_FIX_SPECIAL = "replace it with the regular file itself and re-package the bundle"


def file_kind(mode: int) -> str:
    """'regular file', 'symbolic link', 'FIFO', ... for an lstat/fstat mode."""
    return next((kind for test, kind in _KINDS if test(mode)), "special file")


def open_regular(path: str | Path) -> BinaryIO:
    """Open a bundle file for reading only if the entry itself is a regular file.

    A symlink may point outside the bundle (/etc/passwd, /dev/zero) and a FIFO or a device
    never ends or blocks forever: lstat refuses them before anything is opened; O_NOFOLLOW
    and O_NONBLOCK keep the open itself from following or blocking if the entry is swapped
    in between; fstat then checks what was actually opened. FileNotFoundError passes
    through; any other refusal is a BundleError naming the file.
    """
    mode = os.lstat(path).st_mode
    if not stat.S_ISREG(mode):
        raise BundleError(f"a {file_kind(mode)}, not a regular file", where=str(path), fix=_FIX_SPECIAL)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:  # ELOOP: it became a link after lstat
        raise BundleError(f"cannot be opened safely ({exc.strerror or exc})", where=str(path),
                          fix=_FIX_SPECIAL) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise BundleError(f"a {file_kind(mode)}, not a regular file", where=str(path), fix=_FIX_SPECIAL)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a regular file, read in chunks (weights may be gigabytes) and no further than
    the size it had when opened plus one chunk: a file that grows while it is read is refused."""
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        digest, buffer, seen = hashlib.sha256(), bytearray(1 << 20), 0
        view = memoryview(buffer)
        while seen <= size:
            n = handle.readinto(view)
            if not n:
                return digest.hexdigest()
            digest.update(view[:n])
            seen += n
    raise BundleError(f"grew from {size} bytes while it was read", where=str(path),
                      fix="do not write to a bundle while it is verified or packaged")


def read_bounded(path: str | Path, limit: int) -> bytes:
    """A regular file's bytes, refused (BundleError) when it holds more than limit bytes."""
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        data = handle.read(limit + 1) if size <= limit else b""
    if size > limit or len(data) > limit:
        raise BundleError(f"too large: {max(size, len(data))} bytes or more, at most {limit} expected",
                          where=str(path), fix="re-package the bundle with slmc")
    return data


def bundle_files(folder: str | Path) -> list[str]:
    """Relative POSIX paths of every file under folder except manifest.json, sorted.

    Only regular files and folders may be in a bundle: a symbolic link could point the
    runtime at a file outside the bundle, and a FIFO, socket or device node is nothing a
    loader should open (reading one blocks or never ends). Any such entry is refused,
    all of them named, before a single file is read. The walk never follows links.
    """
    root = Path(folder)
    names, special, pending = [], [], [root]
    while pending:
        current = pending.pop()
        try:
            entries = list(os.scandir(current))
        except OSError as exc:
            raise BundleError(f"the folder cannot be listed ({exc.strerror or exc})", where=str(current),
                              fix="make the bundle folder readable") from None
        for entry in entries:
            rel = Path(entry.path).relative_to(root).as_posix()
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                if rel != MANIFEST_NAME:
                    names.append(rel)
            else:
                special.append(f"{rel} ({file_kind(entry.stat(follow_symlinks=False).st_mode)})")
    if special:
        raise BundleError("symbolic links, FIFOs, sockets and device nodes are not allowed in a bundle: "
                          + ", ".join(sorted(special)), where=str(root),
                          fix="replace each with the regular file itself and re-package the bundle")
    return sorted(names)


def hash_folder(folder: str | Path) -> dict[str, str]:
    """{relative path: sha256} for every bundle file except manifest.json."""
    root = Path(folder)
    return {rel: sha256_file(root / rel) for rel in bundle_files(root)}


def with_hashes(folder: str | Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of manifest whose "hashes" covers the folder's files as they are now."""
    return {**manifest, "hashes": hash_folder(folder)}


def manifest_checksum(manifest: Mapping[str, Any]) -> str:
    """sha256 of the manifest's data without its own `manifest_sha256` key.

    The data, not the file's bytes, is hashed, so the checksum can live in the file it
    covers: the canonical form is `json.dumps(data, sort_keys=True, separators=(",", ":"),
    ensure_ascii=True)` encoded as ASCII (keys sorted at every level, no whitespace,
    non-ASCII as \\uXXXX escapes, floats as Python's shortest round-trip repr). Any JSON
    library that sorts keys and escapes non-ASCII reproduces it. Written here because the
    runtime may import nothing beyond the stdlib for it (RFC 8785 libraries exist but
    differ in float and non-ASCII output, and would be a new dependency).
    """
    body = {key: value for key, value in manifest.items() if key != CHECKSUM_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def manifest_json(manifest: Mapping[str, Any]) -> str:
    """The text of manifest.json: the manifest plus a fresh `manifest_sha256`, last.

    Key order within sections is kept and the indent is 2 spaces, for people; any stale
    manifest_sha256 in `manifest` is replaced.
    """
    body = {key: value for key, value in manifest.items() if key != CHECKSUM_KEY}
    return json.dumps({**body, CHECKSUM_KEY: manifest_checksum(body)}, indent=2, ensure_ascii=False) + "\n"


def checksum_problems(data: Mapping[str, Any]) -> list[str]:
    """Why manifest.json's own checksum does not hold; empty when it does.

    Required, not optional: were a missing checksum accepted, one flipped byte in the
    key's name would switch the check off.
    """
    recorded = data.get(CHECKSUM_KEY)
    if recorded is None:
        return [f"no {CHECKSUM_KEY} in {MANIFEST_NAME} (written by an slmc without manifest checksums, "
                "or edited): its values cannot be trusted"]
    try:
        actual = manifest_checksum(data)
    except (RecursionError, ValueError):  # nested deeper than the encoder goes: not slmc's
        actual = None
    if recorded != actual:
        return [f"{CHECKSUM_KEY} does not match the content of {MANIFEST_NAME} (edited or corrupt)"]
    return []


def _type_ok(value: Any, expected: Any) -> bool:
    if isinstance(expected, OneOf):
        return value in expected
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) and bool not in types:
        return False  # bool is an int subclass; a flag is never a count
    return isinstance(value, types)


def _describe(expected: Any) -> str:
    if isinstance(expected, OneOf):
        return "one of " + ", ".join(repr(v) for v in expected)
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join("null" if t is _N else t.__name__ for t in types)


def schema_problems(data: Any, schema: Mapping[str, Any] = SCHEMA, prefix: str = "") -> list[str]:
    """Every missing or mistyped key, as dotted paths; empty when the manifest fits the schema."""
    if not isinstance(data, Mapping):
        return [f"{prefix.rstrip('.') or 'manifest'}: expected an object"]
    problems = []
    for key, expected in schema.items():
        path = prefix + key
        if key not in data:
            problems.append(f"missing key '{path}'")
        elif isinstance(expected, dict):
            problems += schema_problems(data[key], expected, path + ".")
        elif not _type_ok(data[key], expected):
            problems.append(f"'{path}' is {data[key]!r}, expected {_describe(expected)}")
    return problems


_INT32_MAX = 2**31 - 1  # ONNX Runtime dimensions and token ids fit here in any real bundle


def _int_at_least(minimum: int):
    return lambda v: not isinstance(v, bool) and isinstance(v, int) and minimum <= v <= _INT32_MAX


def _layer_name(template: str) -> bool:
    """A per-layer tensor name: formats with `layer` only (no other fields, no attribute access)."""
    try:
        return "{layer}" in template and template.format(layer=0) == template.replace("{layer}", "0")
    except (KeyError, IndexError, ValueError, AttributeError):
        return False


_POSITIVE = (_int_at_least(1), "an integer in [1, 2**31)")
RANGES: dict[str, tuple[Any, str]] = {
    **{f"model.{k}": _POSITIVE for k in ("vocab_size", "num_hidden_layers", "num_attention_heads",
                                          "num_key_value_heads", "head_dim", "hidden_size", "max_position_embeddings")},
    **{f"kv_cache.{k}": _POSITIVE for k in ("num_layers", "num_key_value_heads", "head_dim")},
    **{f"kv_cache.{k}": (_layer_name, "a tensor name with one '{layer}' placeholder")
       for k in ("past_key", "past_value", "present_key", "present_value")},
    "limits.max_seq_len": (_int_at_least(2), "an integer in [2, 2**31)"),
    "limits.max_batch_size": _POSITIVE,
    "tokens.bos_token_id": (lambda v: v is None or _int_at_least(0)(v), "null or a token id in [0, 2**31)"),
    "tokens.eos_token_ids": (lambda v: all(_int_at_least(0)(i) for i in v), "a list of token ids in [0, 2**31)"),
    "tokens.pad_token_id": (_int_at_least(0), "a token id in [0, 2**31)"),
}
"""Values that have the right type but must also lie in a range the runtime can act on."""


def range_problems(data: Mapping[str, Any]) -> list[str]:
    """Every value of RANGES out of range, plus a KV layout the listed graph inputs cannot hold."""
    problems = []
    for dotted, (ok, wanted) in RANGES.items():
        section, key = dotted.split(".")
        if not ok(data[section][key]):
            problems.append(f"'{dotted}' is {data[section][key]!r}, expected {wanted}")
    inputs = data["io"]["inputs"]
    if not problems and 2 * data["kv_cache"]["num_layers"] > len(inputs):
        problems.append(f"'kv_cache.num_layers' is {data['kv_cache']['num_layers']}, but io.inputs lists "
                        f"{len(inputs)} inputs (two cache inputs per layer)")
    return problems


def check_schema_version(version: Any, path: Path) -> None:
    """BundleError unless this runtime reads `version`; a newer bundle is told apart from a broken one.

    Checked before the checksum: a newer slmc may have changed how the manifest is hashed, and
    its users need "upgrade the runtime", not "the manifest was edited".
    """
    if version == SCHEMA_VERSION:
        return
    where = f"{path}: schema_version"
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise BundleError(
            f"the bundle is newer than this runtime: its manifest has schema_version {version}, and this "
            f"slmc.runtime reads schema_version {SCHEMA_VERSION} only", where=where,
            fix="upgrade slmc on this machine (pip install -U slmc) to one that reads schema_version "
                f"{version}, or re-compile the bundle with the slmc installed here")
    raise BundleError(f"schema_version {version!r} is not supported (this runtime reads {SCHEMA_VERSION})",
                      where=where, fix="use the slmc runtime version that produced the bundle, or re-compile it")
def draft_problems(data: Mapping[str, Any]) -> list[str]:
    """The draft section's keys, ranges and the rule that it shares the target's vocabulary."""
    draft = data["draft"]
    problems = schema_problems(draft, DRAFT_SCHEMA, "draft.")
    if problems:
        return problems
    problems = [p.replace("'", "'draft.", 1) for p in range_problems({**data, **draft})]
    if draft["model"]["vocab_size"] != data["model"]["vocab_size"]:
        problems.append(f"'draft.model.vocab_size' is {draft['model']['vocab_size']}, the target's "
                        f"{data['model']['vocab_size']}: a draft must share the target's tokenizer")
    return problems


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Parse folder/manifest.json and check its schema version, its own checksum and its keys
    (not the files' hashes).

    The checksum is checked before any value is trusted; every problem is reported at once,
    so an edited value shows both the broken checksum and what the edit broke.
    """
    path = Path(folder) / MANIFEST_NAME
    if not Path(folder).is_dir():
        raise BundleError("not a bundle folder", where=str(folder), fix="pass the bundle directory")
    try:
        # Type and size first (open_regular, read_bounded): nothing is read from a link, a FIFO
        # or a device, and never more than MAX_MANIFEST_BYTES.
        data = json.loads(read_bounded(path, MAX_MANIFEST_BYTES).decode("utf-8"))
    except FileNotFoundError:
        raise BundleError("manifest.json is missing", where=str(path),
                          fix="pass the bundle folder itself (a run folder's is <run>/bundle), "
                              "or re-package the bundle") from None
    except BundleError:
        raise  # not a regular file, or too large: already names manifest.json
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the parser's recursion limit
        raise BundleError(f"unreadable manifest: {exc}", where=str(path), fix="re-package the bundle") from None
    check_schema_version(data.get("schema_version") if isinstance(data, dict) else None, path)
    tampered = checksum_problems(data)
    problems = schema_problems(data)
    if data.get("format") != FORMAT:
        problems.append(f"'format' is {data.get('format')!r}, expected {FORMAT!r}")
    if "version" in data and not isinstance(data["version"], str):  # optional: bundles before versions lack it
        problems.append(f"'version' is {data['version']!r}, expected a string")
    if not problems:
        problems = range_problems(data)
    if not problems and "draft" in data:
        problems = draft_problems(data)
    if tampered or problems:
        fix = ("re-copy the bundle from its source or re-package it with slmc; never edit manifest.json"
               if tampered else "re-package the bundle with slmc")
        raise BundleError("; ".join(tampered + problems), where=str(path), fix=fix)
    return data


def parity_blocks(data: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """(shipped, export): `metrics.parity`, the shipped graph measured against the fp32 checkpoint,
    and `metrics.export_parity`, the fp32 export's exact check (docs/bundle-format.md, metrics).

    A bundle packaged before the shipped graph was measured has no `export_parity`: its `parity`
    is the export's, and nothing describes the graph it ships (shipped is None).
    """
    metrics = data.get("metrics")
    if not isinstance(metrics, Mapping):
        return None, None
    if "export_parity" not in metrics:
        return None, metrics.get("parity")
    return metrics.get("parity"), metrics.get("export_parity")


@dataclass(frozen=True)
class KVSpec:
    """Names, shape and dtype of the past/present tensors, in graph order."""

    num_layers: int
    num_heads: int
    head_dim: int
    dtype: str
    past: tuple[str, ...]
    present: tuple[str, ...]

    @classmethod
    def from_manifest(cls, kv: Mapping[str, Any]) -> KVSpec:
        layers = range(kv["num_layers"])
        past = tuple(kv[k].format(layer=i) for i in layers for k in ("past_key", "past_value"))
        present = tuple(kv[k].format(layer=i) for i in layers for k in ("present_key", "present_value"))
        return cls(kv["num_layers"], kv["num_key_value_heads"], kv["head_dim"], kv["dtype"], past, present)


@dataclass(frozen=True)
class Manifest:
    """A verified manifest and the bundle folder it belongs to."""

    folder: Path
    data: Mapping[str, Any]

    def path(self, role: str) -> Path:
        """Absolute path of a file by role ("model", "tokenizer")."""
        return self.folder / self.data["files"][role]

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def kv(self) -> KVSpec:
        return KVSpec.from_manifest(self.data["kv_cache"])

    @property
    def draft(self) -> Manifest | None:
        """The draft decoder's view (its model, io, kv_cache and files.model over this bundle's
        other sections), or None when the bundle has no draft."""
        draft = self.data.get("draft")
        if draft is None:
            return None
        return Manifest(self.folder, {**self.data, **draft, "files": {**self.data["files"], **draft["files"]}})

    @property
    def execution_provider(self) -> str:
        return self.data["runtime"]["execution_provider"]

    @property
    def max_seq_len(self) -> int:
        return self.data["limits"]["max_seq_len"]

    @property
    def max_batch_size(self) -> int:
        return self.data["limits"]["max_batch_size"]

    @property
    def tokens(self) -> Mapping[str, Any]:
        return self.data["tokens"]

    @property
    def generation(self) -> Mapping[str, Any]:
        return self.data["generation"]
