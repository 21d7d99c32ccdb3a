"""Attach a draft decoder to a bundle: a second compiled bundle becomes the target's drafter.

    python -m slmc.draft TARGET_BUNDLE DRAFT_BUNDLE OUT_BUNDLE

Both are bundles `slmc compile` made (e.g. the target, and a smaller model derived from it
with `init=prune` and/or `init=distill` with the target as teacher, or trained on the same
tokenizer). OUT_BUNDLE is the target with the draft's model under `draft/` and the
manifest's `draft` section (docs/bundle-format.md), re-hashed; `slmc run
--speculative=draft` then uses it. Rules, all checked before anything is written and all
reported at once: the same tokenizer, a draft smaller than the target, a draft whose context
covers the target's, the same runtime and provider, and both models plus their KV caches
within the device's usable memory.

A `draft` config section does the same inside one `slmc compile` (stages.draft compiles the
draft, the package stage calls `add_draft`); this tool is for a draft compiled separately.
Where the target ships genai_config.json, the draft's decoder block goes in as `model.draft`
with a `speculative` section: ONNX Runtime GenAI's own speculative decoding reads it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from slmc.runtime.manifest import MANIFEST_NAME, Manifest, manifest_json, with_hashes
from slmc.runtime.verify import verify_bundle

from .errors import SlmcError

DRAFT_FOLDER = "draft"
GENAI_CONFIG = "genai_config.json"
_KV_BYTES = {"float32": 4, "float16": 2}


class DraftError(SlmcError):
    """The draft cannot serve this target; the message lists every reason."""


def model_bytes(manifest: Manifest) -> int:
    """Bytes of the model file and its external data (the files the draft brings along)."""
    return sum((manifest.folder / rel).stat().st_size for rel in _model_files(manifest))


def kv_bytes(manifest: Manifest) -> int:
    """The KV cache at the bundle's limits: max_batch_size rows of max_seq_len positions."""
    kv = manifest.data["kv_cache"]
    per_token = 2 * kv["num_layers"] * kv["num_key_value_heads"] * kv["head_dim"] * _KV_BYTES[kv["dtype"]]
    return per_token * manifest.max_seq_len * manifest.max_batch_size


def draft_rule_problems(target: Manifest, draft: Manifest, memory_bytes: float | None = None) -> list[str]:
    """Why `draft` cannot be `target`'s draft (empty: it can)."""
    t, d = target.data, draft.data
    problems = []
    tokenizer = t["files"]["tokenizer"], d["files"]["tokenizer"]
    if t["hashes"].get(tokenizer[0]) != d["hashes"].get(tokenizer[1]):
        problems.append("the draft's tokenizer differs from the target's (tokenizer.json sha256): a draft must "
                        "share the target's tokenizer")
    if t["model"]["vocab_size"] != d["model"]["vocab_size"]:
        problems.append(f"the draft's vocab_size is {d['model']['vocab_size']}, "
                        f"the target's {t['model']['vocab_size']}")
    if d["model"]["parameters"] >= t["model"]["parameters"]:
        problems.append(f"the draft has {d['model']['parameters']:,} parameters, not fewer than the target's "
                        f"{t['model']['parameters']:,}: it would not make decoding faster")
    if draft.max_seq_len < target.max_seq_len:
        problems.append(f"the draft's max_seq_len is {draft.max_seq_len}, the target's {target.max_seq_len}: "
                        "the draft must reach every position the target does")
    for key in ("name", "execution_provider"):
        if t["runtime"][key] != d["runtime"][key]:
            problems.append(f"the draft runs on runtime.{key} {d['runtime'][key]!r}, the target on "
                            f"{t['runtime'][key]!r}")
    if memory_bytes is not None:
        need = model_bytes(target) + kv_bytes(target) + model_bytes(draft) + kv_bytes(draft)
        if need > memory_bytes:
            problems.append(f"target and draft need {need / 2**30:.2f} GiB (weights + KV caches at the limits), "
                            f"the device's usable memory is {memory_bytes / 2**30:.2f} GiB")
    return problems


def attach_draft(target_dir: Path, draft_dir: Path, out_dir: Path, *, memory_bytes: float | None = None,
                 max_draft_tokens: int = 4) -> Path:
    """OUT = the target bundle plus the draft's model and manifest section; both inputs are verified first."""
    target = verify_bundle(target_dir, allow_foreign=True)  # packaging: the device may be another machine
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise DraftError("the output folder exists", where=str(out_dir), fix="choose a new folder")
    if "draft" in target.data:
        raise DraftError("the target bundle already has a draft", where=str(target_dir),
                         fix="attach to the bundle without one")
    draft = checked_draft(target, draft_dir, memory_bytes, where=f"{draft_dir} as the draft of {target_dir}")
    shutil.copytree(target.folder, out_dir)
    add_draft(out_dir, target, draft, max_draft_tokens=max_draft_tokens)
    return out_dir


def add_draft(folder: Path, target: Manifest, draft: Manifest, *, max_draft_tokens: int) -> dict:
    """Put `draft` into the bundle folder `folder` (holding `target`'s files): its model under draft/,
    the manifest's `draft` section, genai_config.json's draft decoder; re-hashed and verified.
    Returns the new manifest data."""
    (folder / DRAFT_FOLDER).mkdir()
    for rel in _model_files(draft):  # the model and its external data keep their relative names
        shutil.copy2(draft.folder / rel, folder / DRAFT_FOLDER / rel)
    data = {k: v for k, v in target.data.items() if k not in ("hashes", "manifest_sha256")}
    data["draft"] = {"files": {"model": f"{DRAFT_FOLDER}/{draft.data['files']['model']}"},
                     "model": draft.data["model"], "io": draft.data["io"], "kv_cache": draft.data["kv_cache"]}
    versions = [target.data["runtime"]["min_onnxruntime"], draft.data["runtime"]["min_onnxruntime"]]
    data["runtime"] = {**data["runtime"], "min_onnxruntime": max(versions, key=_version)}
    genai = folder / GENAI_CONFIG
    if genai.is_file() and (draft.folder / GENAI_CONFIG).is_file():
        genai.write_text(json.dumps(with_genai_draft(json.loads(genai.read_text(encoding="utf-8")),
                                                     json.loads((draft.folder / GENAI_CONFIG).read_text(encoding="utf-8")),
                                                     max_draft_tokens=max_draft_tokens), indent=2) + "\n",
                         encoding="utf-8")
    (folder / MANIFEST_NAME).unlink()
    data = with_hashes(folder, data)
    (folder / MANIFEST_NAME).write_text(manifest_json(data), encoding="utf-8")
    verify_bundle(folder, allow_foreign=True)
    return data


def with_genai_draft(target: dict, draft: dict, *, max_draft_tokens: int) -> dict:
    """The target's genai_config.json with the draft's decoder as `model.draft` and a `speculative`
    section: ONNX Runtime GenAI (0.18+) then decodes speculatively with the draft
    (its docs/SpeculativeDecoding.md: the complete draft decoder block, filename relative to the config)."""
    block = {**draft["model"]["decoder"], "filename": f"{DRAFT_FOLDER}/{draft['model']['decoder']['filename']}"}
    return {**target, "model": {**target["model"], "draft": block},
            "speculative": {"max_draft_tokens": max_draft_tokens}}


def checked_draft(target: Manifest, draft_dir: Path, memory_bytes: float | None, *, where: str = "draft") -> Manifest:
    """The draft bundle at `draft_dir`, verified and checked against `target` (DraftError lists every problem)."""
    draft = verify_bundle(draft_dir, allow_foreign=True)
    problems = draft_rule_problems(target, draft, memory_bytes)
    if problems:
        raise DraftError("; ".join(problems), where=where,
                         fix="compile a smaller draft from the target (init=prune / init=distill) with the same "
                             "tokenizer and export.max_seq_len")
    return draft


def _model_files(manifest: Manifest) -> list[str]:
    model = manifest.data["files"]["model"]
    return sorted(rel for rel in manifest.data["hashes"] if rel == model or rel.startswith(model + "."))


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slmc.draft", description=__doc__.split("\n")[0])
    parser.add_argument("target", type=Path)
    parser.add_argument("draft", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-draft-tokens", type=int, default=4,
                        help="draft tokens per target call written to genai_config.json (default 4)")
    parser.add_argument("--memory-gb", type=float,
                        help="usable device memory in GB (default: none checked); slmc devices lists the profiles")
    args = parser.parse_args(argv)
    try:
        out = attach_draft(args.target, args.draft, args.out,
                           memory_bytes=args.memory_gb * 1e9 if args.memory_gb else None,
                           max_draft_tokens=args.max_draft_tokens)
    except Exception as exc:  # noqa: BLE001 - SlmcError and the runtime's BundleError both render
        render = getattr(exc, "render", None)
        print(f"error: {render() if render else exc}", file=sys.stderr)
        return 2
    print(json.dumps({"ok": True, "bundle": str(out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
