"""The checkpoint is the truth: what a checkpoint folder (or Hub id) holds, validated, without weights.

With init=pretrained|prune (and a distillation teacher) the architecture is the checkpoint's
config.json, not the `model` group. `inspect_checkpoint` reads config.json, the tokenizer
files and only the 8-byte length + JSON header of each safetensors file, and records every
problem as a `Finding` that names the file and a fix fitting its cause (a NaN rms_norm_eps is
a broken checkpoint config, not a training problem). It never raises for a bad checkpoint and
never imports torch or transformers: `slmc check` runs it on its cold path, and the rules in
`slmc.rules.checkpoint` turn the findings into violations.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping

from . import families
from .estimate import Arch, param_count, rope_parameters
from .families import Family, UnsupportedArchitecture
from .hub import HubError, HubRef, HubSnapshot, fetch_check_files, hub_offline, parse_hub_id

Check = Literal["source", "config", "architecture", "remote_code", "weights", "tokenizer"]
"""Which rule of `slmc.rules.checkpoint` reports a finding."""

MAX_CONFIG_BYTES = 1 << 20
"""config.json and the other small JSON files of a checkpoint (published ones are a few kB)."""
MAX_TOKENIZER_BYTES = 256 << 20
"""tokenizer.json (Gemma 3's is ~33 MB)."""
MAX_JSON_DEPTH = 64
"""Nesting any checkpoint JSON may have (configs nest ~4 deep, tokenizer.json ~8)."""
MAX_SAFETENSORS_HEADER = 100_000_000
"""The safetensors format's own limit on its JSON header."""

COUNTS: dict[str, tuple[int, int]] = {
    "hidden_size": (1, 1 << 16),
    "num_hidden_layers": (1, 1024),
    "num_attention_heads": (1, 1024),
    "num_key_value_heads": (1, 1024),
    "intermediate_size": (1, 1 << 18),
    "vocab_size": (1, 1 << 22),
    "max_position_embeddings": (1, 1 << 24),
    "original_max_position_embeddings": (1, 1 << 24),
    "head_dim": (1, 1024),
    "sliding_window": (1, 1 << 24),
    "max_window_layers": (0, 1 << 16),
    "sliding_window_pattern": (1, 1024),
}
"""Whole-number fields and the range a real decoder's value lies in (beyond it: a broken file)."""

REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")

POSITIVE_FLOATS: dict[str, float] = {
    "rms_norm_eps": 0.1, "rope_theta": 1e12, "partial_rotary_factor": 1.0, "final_logit_softcapping": 1e6,
    "attn_logit_softcapping": 1e6, "query_pre_attn_scalar": 1e9,
}
"""Real-valued fields: finite, > 0 and at most this (published rms_norm_eps are 1e-5 or 1e-6)."""

BOOLS = ("tie_word_embeddings", "attention_bias", "mlp_bias", "use_sliding_window")
TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")
LAYER_KINDS = ("sliding_attention", "full_attention")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True)
class Finding:
    """One thing wrong (or worth saying) about a checkpoint, naming the file it is about."""

    check: Check
    severity: Literal["error", "warning"]
    file: str
    message: str
    fix: str


@dataclass(frozen=True)
class CheckpointFacts:
    """What `inspect_checkpoint` found for one checkpoint source."""

    source: str                          # as configured: a folder or a Hub id
    folder: Path | None = None           # the local folder read (a Hub cache snapshot for Hub ids)
    hub: HubSnapshot | None = None
    config: Mapping[str, Any] | None = None
    arch: Arch | None = None             # None unless config.json is valid and its family supported
    family: Family | None = None
    names: frozenset[str] = frozenset()  # files of the checkpoint (the repo listing for Hub ids when known)
    findings: tuple[Finding, ...] = ()

    @property
    def revision(self) -> str | None:
        """The resolved Hub commit sha (None for a local folder)."""
        return self.hub.commit if self.hub else None

    def of(self, check: Check) -> list[Finding]:
        return [f for f in self.findings if f.check == check]


class BadFile(Exception):
    """A file that cannot be used; str() says why (the caller names the file)."""


# -- reading ------------------------------------------------------------------


def read_json(path: Path, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """JSON from a regular file of at most `max_bytes`, nested at most MAX_JSON_DEPTH deep.

    The file type and size are checked before anything is read (a FIFO or /dev/zero behind
    the name must not hang or fill memory). NaN/Infinity parse as floats (Python's json
    accepts them); `non_finite` finds them so the message can name the key.
    """
    data = _bounded_bytes(path, max_bytes)
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError:  # the C scanner recurses per level; deeper than Python's limit
        raise BadFile(f"is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except UnicodeDecodeError as exc:
        raise BadFile(f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise BadFile(f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise BadFile(f"is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _bounded_bytes(path: Path, max_bytes: int) -> bytes:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BadFile("does not exist") from None
    except OSError as exc:
        raise BadFile(f"cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadFile("is not a regular file")
    if st.st_size > max_bytes:
        raise BadFile(f"is {st.st_size} bytes, more than the {max_bytes} this file may have")
    try:
        with open(path, "rb") as f:
            return f.read(max_bytes + 1)[:max_bytes]
    except OSError as exc:
        raise BadFile(f"cannot be read ({exc.strerror or exc})") from None


def _depth(value: Any) -> int:
    """Nesting depth, iteratively (a recursive walk is what the bound protects against)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, d = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, d)
            if d > MAX_JSON_DEPTH:
                return d
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, d + 1) for c in children)
    return deepest


def non_finite(value: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """(dotted key, value) of every NaN or infinite number inside a JSON value."""
    stack = [(prefix, value)]
    while stack:
        key, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            yield key, item
        elif isinstance(item, dict):
            stack.extend((f"{key}.{k}" if key else str(k), v) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((f"{key}[{i}]", v) for i, v in enumerate(item))


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, checked against the file's size; BadFile if unusable.

    Read by hand (8-byte little-endian length, then that many bytes of JSON: the format's
    whole framing) because safetensors' own reader maps the file and needs a tensor framework
    imported, which `slmc check` must not pay for; only the header is read.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise BadFile(f"cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadFile("is not a regular file")
    size = st.st_size
    if size < 8:
        raise BadFile(f"is truncated: {size} bytes, fewer than the 8-byte header length")
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > MAX_SAFETENSORS_HEADER:
            raise BadFile(f"declares a {n}-byte header, beyond the format's limit: not a safetensors file")
        if 8 + n > size:
            raise BadFile(f"is truncated: its header claims {n} bytes but the file has {size - 8} after the length")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise BadFile("has a header that is not JSON: not a safetensors file") from None
    if not isinstance(header, dict):
        raise BadFile("has a header that is not a JSON object: not a safetensors file")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise BadFile(f"has a malformed entry for tensor {name!r}")
        end = max(end, offsets[1])
    if 8 + n + end > size:
        raise BadFile(f"is truncated: its tensors end at byte {8 + n + end} but the file has {size} bytes")
    if not any(k != "__metadata__" for k in header):
        raise BadFile("holds no tensors")
    return header


# -- inspecting ---------------------------------------------------------------


def inspect_checkpoint(source: str, *, weights: bool = True) -> CheckpointFacts:
    """Facts about a checkpoint folder or Hub id; every problem is a Finding, nothing raises.

    A Hub id is resolved through huggingface_hub (config and tokenizer files only); its
    weights are then judged from the repo listing or the cache, never downloaded here.
    `weights=False` skips the safetensors headers.
    """
    ref = parse_hub_id(source)
    if ref is not None:
        return _inspect_hub(source, ref, weights)
    folder = Path(source).expanduser()
    if not folder.is_dir():
        return CheckpointFacts(source, folder)  # data.paths_exist names a missing folder or a file
    try:
        names = frozenset(p.name for p in folder.iterdir())
    except OSError:
        names = frozenset()
    return _inspect_folder(source, folder, names, None, weights)


def _inspect_hub(source: str, ref: HubRef, weights: bool) -> CheckpointFacts:
    try:
        snap = fetch_check_files(ref)
    except HubError as exc:
        return CheckpointFacts(source, findings=(Finding("source", "error", source, exc.message, exc.fix or ""),))
    local = frozenset(p.name for p in snap.folder.iterdir())
    return _inspect_folder(source, snap.folder, local | (snap.files or frozenset()), snap, weights)


def _inspect_folder(source: str, folder: Path, names: frozenset[str], hub: HubSnapshot | None,
                    weights: bool) -> CheckpointFacts:
    found: list[Finding] = []
    config_path = folder / "config.json"
    config = arch = family = None
    if "config.json" in names:
        try:
            raw = read_json(config_path)
        except BadFile as exc:
            found.append(Finding("config", "error", str(config_path), f"{config_path} {exc}",
                                 _repair(config_path, hub)))
        else:
            if isinstance(raw, dict):
                config = raw
                family, arch = _judge_config(raw, config_path, hub, found)
            else:
                found.append(Finding("config", "error", str(config_path),
                                     f"{config_path} is not a JSON object", _repair(config_path, hub)))
    elif hub is not None:
        found.append(Finding("source", "error", str(hub.ref), f"{hub.ref} (commit {hub.commit}) has no config.json: "
                             "it is not a transformers checkpoint", "use the repo of the model's transformers weights"))
    found.extend(_tokenizer_findings(folder, names, hub))
    if weights:
        found.extend(_weight_findings(folder, names, hub))
    return CheckpointFacts(source, folder, hub, config, arch, family, names, tuple(found))


def _repair(path: Path, hub: HubSnapshot | None) -> str:
    if hub is not None:
        return f"the Hub revision {hub.ref}@{hub.commit[:12]} is broken: use another revision or repair a local copy"
    return f"restore {path.name} from the original checkpoint (save_pretrained writes a valid one)"


# -- config.json --------------------------------------------------------------


def _judge_config(raw: dict, path: Path, hub: HubSnapshot | None, found: list[Finding]):
    """Family and Arch of a valid config; appends a Finding for every problem."""
    where = str(path)
    fix = _repair(path, hub)

    def bad(message: str, fix_: str = fix, check: Check = "config", severity="error") -> None:
        found.append(Finding(check, severity, where, f"{path}: {message}", fix_))

    start = len(found)
    family = _judge_family(raw, path, found)
    if family is None:
        return None, None  # its fields are another architecture's: checking them would only add noise
    for key, value in non_finite(raw):
        bad(f"{key} is {value!r}; JSON has no NaN or infinity, so the checkpoint's config is broken",
            f"set {key} in {path} to the value the model was trained with (copy it from the original config.json)")
    for key in REQUIRED:
        if raw.get(key) is None:
            bad(f"has no {key}", f"add {key} to {path} (copy it from the original config.json)")
    for key, (low, high) in COUNTS.items():
        value = raw.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            bad(f"{key} must be a whole number, got {value!r}")
        elif not low <= value <= high:
            bad(f"{key}={value} is outside the range a real decoder has ({low}..{high})")
    for key, high in POSITIVE_FLOATS.items():
        value = raw.get(key)
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            continue  # absent, or NaN/inf: reported above
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= high:
            bad(f"{key}={value!r} must be a positive number at most {high:g}")
    for key in BOOLS:
        if key in raw and raw[key] is not None and not isinstance(raw[key], bool):
            bad(f"{key} must be true or false, got {raw[key]!r}")
    _check_rope(raw, bad)
    _check_layer_types(raw, bad)
    _check_token_ids(raw, bad)

    _judge_family_traits(raw, family, bad)
    _judge_remote_code(raw, path, family, found)
    if any(f.severity == "error" for f in found[start:]):
        return family, None
    try:
        return family, Arch.from_hf_config(raw)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        bad(f"lacks a usable architecture field ({exc})")
        return family, None


def _check_rope(raw: dict, bad) -> None:
    for key in ("rope_parameters", "rope_scaling"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            bad(f"{key} must be an object or null, got {type(raw[key]).__name__}")
            return
    for params in rope_parameters(raw):
        for name in ("factor", "rope_theta", "low_freq_factor", "high_freq_factor", "attention_factor",
                     "beta_fast", "beta_slow"):
            v = params.get(name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
                if not (isinstance(v, float) and not math.isfinite(v)):  # NaN/inf reported already
                    bad(f"RoPE {name}={v!r} must be a positive number")
        for name in ("long_factor", "short_factor"):
            v = params.get(name)
            if v is not None and not (isinstance(v, list) and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in v)):
                bad(f"RoPE {name} must be a list of positive numbers")


def _check_layer_types(raw: dict, bad) -> None:
    types = raw.get("layer_types")
    if types is None:
        return
    layers = raw.get("num_hidden_layers")
    if not isinstance(types, list) or any(t not in LAYER_KINDS for t in types):
        bad(f"layer_types must list {' / '.join(LAYER_KINDS)} per layer")
    elif isinstance(layers, int) and len(types) != layers:
        bad(f"layer_types has {len(types)} entries for num_hidden_layers={layers}")


def _check_token_ids(raw: dict, bad) -> None:
    vocab = raw.get("vocab_size")
    if not isinstance(vocab, int) or isinstance(vocab, bool):
        return
    for key in TOKEN_IDS:
        value = raw.get(key)
        ids = value if isinstance(value, list) else [value]
        for i in ids:
            if i is None:
                continue
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < vocab:
                bad(f"{key}={value!r} is not a token id of the vocabulary (0..{vocab - 1})")
                break


def _judge_family(raw: dict, path: Path, found: list[Finding]) -> Family | None:
    try:
        return families.for_config(raw)
    except UnsupportedArchitecture as exc:
        supported = ", ".join(f.published[0] for f in families.FAMILIES.values())
        if raw.get("auto_map"):  # a custom architecture that only its own code can build
            found.append(Finding(
                "remote_code", "error", str(path),
                f"{path}: model_type {raw.get('model_type')!r} needs the code shipped with the checkpoint "
                f"(auto_map: {', '.join(sorted(map(str, raw['auto_map'])))}); slmc never runs checkpoint code "
                f"and compiles {families.supported_text()}",
                f"use a checkpoint of a supported family (e.g. {supported})",
            ))
        else:
            found.append(Finding("architecture", "error", str(path), f"{path}: {exc}",
                                 f"use a checkpoint of a supported family (e.g. {supported})"))
        return None


def _judge_remote_code(raw: dict, path: Path, family: Family, found: list[Finding]) -> None:
    """auto_map next to a model_type transformers implements: the shipped code is ignored (say so)."""
    if not raw.get("auto_map"):
        return
    found.append(Finding(
        "remote_code", "warning", str(path),
        f"{path} has auto_map (code shipped with the checkpoint); slmc never runs it and loads the model "
        f"with transformers' own {family.causal_lm_class} for model_type {raw.get('model_type')!r}",
        "nothing to do for a standard checkpoint (Phi-3's config.json carries one); a checkpoint that needs its "
        "own code cannot be compiled",
    ))


def _judge_family_traits(raw: dict, family: Family, bad) -> None:
    kinds = {p.get("rope_type", p.get("type")) or "default" for p in rope_parameters(raw)}
    kinds = {family.rope_aliases.get(k, k) for k in kinds}
    unknown = sorted(k for k in kinds if k not in family.rope_types)
    if unknown:
        bad(f"RoPE scaling {', '.join(map(repr, unknown))} is not one {family.name} supports "
            f"({', '.join(sorted(family.rope_types))})",
            "use the checkpoint's published rope_scaling, or one of the supported kinds", "architecture")
    archs = raw.get("architectures")
    if isinstance(archs, list) and archs and family.causal_lm_class not in archs:
        bad(f"architectures {archs} does not include {family.causal_lm_class}: the weights may lack the LM head, "
            "which would then start random", "use the causal-LM checkpoint of this model", "architecture", "warning")


# -- tokenizer files ----------------------------------------------------------


def _tokenizer_findings(folder: Path, names: frozenset[str], hub: HubSnapshot | None) -> list[Finding]:
    out = []
    # tokenizer.json is read once, for its vocabulary, by the check context (rules/context.py)
    for name, limit in (("tokenizer_config.json", MAX_CONFIG_BYTES), ("special_tokens_map.json", MAX_CONFIG_BYTES),
                        ("generation_config.json", MAX_CONFIG_BYTES)):
        path = folder / name
        if name not in names or (hub is not None and not path.exists()):
            continue
        try:
            value = read_json(path, limit)
        except BadFile as exc:
            out.append(Finding("tokenizer", "error", str(path), f"{path} {exc}", _repair(path, hub)))
            continue
        if not isinstance(value, dict):
            out.append(Finding("tokenizer", "error", str(path), f"{path} is not a JSON object", _repair(path, hub)))
    return out


# -- weights ------------------------------------------------------------------


def _weight_findings(folder: Path, names: frozenset[str], hub: HubSnapshot | None) -> list[Finding]:
    shards = sorted(n for n in names if n.endswith(".safetensors"))
    if not shards:
        return _no_safetensors(folder, names, hub)
    if hub is not None and not any((folder / n).exists() for n in shards) and hub_offline():
        return [_not_cached(hub)]
    out: list[Finding] = []
    index = folder / "model.safetensors.index.json"
    if "model.safetensors.index.json" in names and (hub is None or index.exists()):
        out.extend(_index_findings(index, names, hub))
    for name in shards:
        path = folder / name
        if hub is not None and not path.exists():
            continue  # listed by the Hub, not downloaded yet: the compile fetches it
        try:
            safetensors_header(path)
        except BadFile as exc:
            fix = _repair(path, hub) if hub else (f"re-save or re-copy {name} (save_pretrained writes complete "
                                                   "safetensors); a partial copy is the usual cause")
            out.append(Finding("weights", "error", str(path), f"{path} {exc}", fix))
    return out


def _no_safetensors(folder: Path, names: frozenset[str], hub: HubSnapshot | None) -> list[Finding]:
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if pickles:
        path = folder / pickles[0]
        convert = ("use a revision of the repo that ships model.safetensors" if hub else
                   f"convert it once, where you trust the file: python -c \"from transformers import "
                   f"AutoModelForCausalLM as M; M.from_pretrained('{folder}').save_pretrained('{folder}')\" "
                   "(save_pretrained writes model.safetensors)")
        return [Finding("weights", "error", str(path),
                        f"{hub.ref if hub else folder} has only pickle weights ({', '.join(pickles[:3])}) and no "
                        "safetensors: slmc loads safetensors only, because unpickling can run code", convert)]
    if hub is None:
        return []  # a folder without weights: data.paths_exist names it
    if hub.files is not None:
        return [Finding("weights", "error", str(hub.ref), f"{hub.ref} (commit {hub.commit}) has no weight files",
                        "use a repo or revision that ships model.safetensors")]
    return [_not_cached(hub)]


def _not_cached(hub: HubSnapshot) -> Finding:
    fetch = f"hf download {hub.ref.repo_id} --revision {hub.commit} --include '*.safetensors' '*.json'"
    return Finding("weights", "error", str(hub.ref),
                   f"the Hub cache holds no safetensors for {hub.ref} (commit {hub.commit}) and HF_HUB_OFFLINE is "
                   "set, so the compile could not fetch the weights",
                   f"`{fetch}` with network access into the same HF_HOME, or unset HF_HUB_OFFLINE")


def _index_findings(index: Path, names: frozenset[str], hub: HubSnapshot | None) -> list[Finding]:
    try:
        data = read_json(index, MAX_TOKENIZER_BYTES)
        weight_map = data["weight_map"]
        files = set(weight_map.values())
        if not all(isinstance(f, str) for f in files):
            raise TypeError
    except BadFile as exc:
        return [Finding("weights", "error", str(index), f"{index} {exc}", _repair(index, hub))]
    except (KeyError, TypeError, AttributeError):
        return [Finding("weights", "error", str(index), f"{index} has no weight_map of tensor -> file names",
                        _repair(index, hub))]
    missing = sorted(f for f in files if f not in names)
    if missing:
        return [Finding("weights", "error", str(index),
                        f"{index} maps tensors to {', '.join(missing[:3])}, which the checkpoint lacks",
                        "copy every shard the index names into the folder")]
    return []


# -- the compile side -----------------------------------------------------------


@dataclass(frozen=True)
class LocalCheckpoint:
    """A checkpoint folder the stages can load, and where it came from."""

    source: str                  # as configured
    folder: Path
    revision: str | None = None  # the Hub commit sha (None for a local folder): for config.yaml, plan, manifest


def local_checkpoint(source: str) -> LocalCheckpoint:
    """The folder a stage loads: `source` itself, or for a Hub id the cache snapshot with its safetensors
    fetched (huggingface_hub's progress bars; HubError with a fix when that is impossible)."""
    ref = parse_hub_id(source)
    if ref is None:
        return LocalCheckpoint(source, Path(source).expanduser())
    from .hub import fetch_weights

    snap = fetch_weights(ref)
    return LocalCheckpoint(source, snap.folder, snap.commit)


# -- names --------------------------------------------------------------------


def checkpoint_model_name(source: str | None) -> str | None:
    """'<family>-<size>' of a checkpoint (e.g. 'llama-135M') from its config.json alone, or None when
    it cannot be read without the network. Names run folders after what is really compiled."""
    if not source:
        return None
    ref = parse_hub_id(source)
    if ref is not None:
        from .hub import cached_config

        path = cached_config(ref)
    else:
        path = Path(source).expanduser() / "config.json"
    try:
        raw = read_json(path) if path is not None else None
        arch = Arch.from_hf_config(raw) if isinstance(raw, dict) else None
    except (BadFile, KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    if arch is None or not all(getattr(arch, k) > 0 for k in REQUIRED):
        return None
    return f"{arch.family}-{_size(param_count(arch))}"


def _size(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            x = n / scale
            return f"{x:.2g}{unit}" if x < 10 else f"{x:.0f}{unit}"
    return str(n)


def effective_model_name(cfg: Any) -> str:
    """The architecture a run builds, for its folder name: the checkpoint's family and size with
    init=pretrained|prune (the `model` group is not used then), else the model preset's name."""
    if cfg.init.kind in ("pretrained", "prune"):
        named = checkpoint_model_name(cfg.init.path)
        if named is not None:
            return named
        ref = parse_hub_id(cfg.init.path or "")
        if ref is not None:  # not fetched yet: the repo's own name
            return ref.repo_id.split("/", 1)[1]
    return cfg.model.name


