"""The package stage: assemble, hash, verify and publish the bundle atomically.

The bundle is built in a temporary sibling folder, verified with the same
runtime code a device uses, and only then renamed to `bundle/`: the final
path is absent, the previous bundle, or the new complete one.

The checkpoint is the truth: the manifest's `model.architecture`, genai_config.json's
`type` and the README name the family of the checkpoint that was exported (its
config.json's model_type), never the `model` group, which a loaded checkpoint does not
use; the provenance names each Hub checkpoint and the commit the run compiled.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
from importlib import metadata
from pathlib import Path

from .. import __version__, families, writer
from ..errors import StageError
from ..layout import LAYOUT
from ..lineage import from_plan as lineage_from_plan
from ..lineage import lineage_record, without_local_paths
from ..load import config_hash, run_name
from ..render import render_template
from .base import Results
from .checkpoints import named_checkpoints, resolved
from .registry import COMPRESS, DRAFT, EXPORT, OPTIMIZE
from .results import PackageResult
from .stop_tokens import stop_token_ids

MIN_ONNXRUNTIME = "1.20"
# Fused bundles use GroupQueryAttention inputs verified on this release only.
MIN_ONNXRUNTIME_FUSED = "1.32"
ARCHES = {"x86_64": "x86_64", "aarch64": "aarch64"}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _tokens(run_dir: Path) -> dict:
    config = json.loads((run_dir / LAYOUT.final_checkpoint / "config.json").read_text())
    eos_ids = stop_token_ids(run_dir)
    pad = config.get("pad_token_id")
    return {"bos_token_id": config.get("bos_token_id"), "eos_token_ids": eos_ids,
            "pad_token_id": pad if pad is not None else (eos_ids[0] if eos_ids else 0)}


def exported_family(export_model: dict) -> families.Family:
    """The family of the checkpoint the export stage exported (its config.json model_type)."""
    model_type = export_model.get("architecture")
    family = families.for_model_type(model_type)
    if family is None:  # `slmc check` refuses such a checkpoint; a checkpoint changed since would get here
        raise StageError(f"the exported checkpoint's model_type {model_type!r} is not a supported family",
                         where=LAYOUT.final_checkpoint, fix=f"compile a checkpoint of {families.supported_text()}")
    return family


def checkpoint_provenance(cfg, run_dir: Path) -> dict:
    """config path -> {hub, revision, family} of each checkpoint the run read (no local paths: the bundle ships)."""
    return {key: resolved(cfg, run_dir, key).manifest_entry() for key in named_checkpoints(cfg)}


def shipped_io(results: Results, run_dir: Path) -> tuple[dict, dict]:
    """(`io`, `kv_cache`) of the graph the bundle ships, read from the graph itself: a later stage may
    change the cache's dtype (ORT fp16), never a name or a shape, which must stay the export's."""
    from ..errors import StageError
    from ..export import read_io
    from ..export.io_spec import KV_NAME_PREFIXES, io_mismatches

    export = results[EXPORT]
    io = read_io(results.model_path(run_dir))
    first_past = export.kv_cache["past_key"].format(layer=0)
    kv = {**export.kv_cache, "dtype": next((e["dtype"] for e in io["inputs"] if e["name"] == first_past), None)}
    promised = {side: [{**e, "dtype": kv["dtype"]} if e["name"].startswith(KV_NAME_PREFIXES) else e
                       for e in entries] for side, entries in export.io.items()}
    problems = io_mismatches(io, promised)
    if problems:
        raise StageError(f"{results.model} does not have the export's I/O: " + "; ".join(problems[:4]),
                         where="package", fix="report this as an slmc bug, with the run folder")
    return io, kv


def build_manifest(cfg, results: Results, run_dir: Path, *, created: str) -> dict:
    from .deploy import shipped_parity
    from .shipped_parity import with_verdict

    export = results[EXPORT]
    family = exported_family(export.model)
    io, kv = shipped_io(results, run_dir)
    metrics = {
        # The graph the bundle ships against the fp32 checkpoint; the export's exact check beside it.
        "parity": with_verdict(shipped_parity(cfg, run_dir, results), cfg.export.parity_tolerance),
        "export_parity": export.parity,
        # One evaluation set for every stage that changes weights (deploy.heldout_tokens).
        "heldout_perplexity": {"checkpoint": export.checkpoint_ppl, "export": export.heldout_ppl},
        "heldout_eval_tokens": export.heldout_eval_tokens,
        "stage_seconds": {name: r.seconds for name, r in results.items()},
    }
    optimize, compress = results.get(OPTIMIZE), results.get(COMPRESS)
    if optimize is not None:
        metrics["heldout_perplexity"]["optimize"] = optimize.heldout_ppl
    if compress is not None:
        metrics["heldout_perplexity"]["compress"] = compress.heldout_ppl
        metrics["compress"] = {k: compress.report[k] for k in ("format", "bytes_before", "bytes_after")}
        if compress.report.get("block_size"):
            metrics["compress"]["block_size"] = compress.report["block_size"]
        if compress.report.get("algo"):  # int4: the MatMulNBitsQuantizer algorithm (compress.int4_algo)
            metrics["compress"]["int4_algo"] = compress.report["algo"]
    ep = cfg.device.ort_execution_provider if cfg.runtime.name == "ort" else "TensorrtExecutionProvider"
    lineage = lineage_from_plan(run_dir) or lineage_record(cfg, run_name(cfg))
    return {
        "schema_version": 1,
        "format": "slmc-bundle",
        "name": run_name(cfg),  # the config's run name: a rebuild into another folder keeps it (slmc.rebuild)
        "version": lineage["version"],
        "device": {"name": cfg.device.name, "isa": cfg.device.isa, "arch": ARCHES[cfg.device.arch],
                   "kind": cfg.device.kind},  # the device class a regression gate compares (compare.locate)
        "runtime": {"name": cfg.runtime.name,
                    "version": cfg.device.tensorrt_version if cfg.runtime.name == "tensorrt" else _version("onnxruntime"),
                    "execution_provider": ep,
                    "min_onnxruntime": MIN_ONNXRUNTIME_FUSED if _fused(results) else MIN_ONNXRUNTIME,
                    # optional: pins the session's intra-op threads (else chosen per machine at load)
                    **({"intra_op_threads": cfg.runtime.intra_op_threads} if cfg.runtime.intra_op_threads else {})},
        "precision": cfg.compress.precision,
        "data": {"format": cfg.data.format, "chat_template": _chat_template(results)},
        "model": {"architecture": family.name, "model_type": export.model["architecture"],
                  **{k: v for k, v in export.model.items() if k != "architecture"}},
        "files": {"model": "model.onnx", "tokenizer": "tokenizer.json"},
        "io": io,
        "kv_cache": kv,
        "limits": {"max_seq_len": cfg.export.max_seq_len, "max_batch_size": cfg.export.max_batch_size},
        "tokens": _tokens(run_dir),
        "generation": cfg.generation.model_dump(),
        "metrics": metrics,
        "provenance": {
            "config_sha256": config_hash(cfg), "seed": cfg.seed, "created": created,
            "checkpoints": checkpoint_provenance(cfg, run_dir),
            "datasets": _dataset_revisions(results),
            "lineage": without_local_paths(lineage),
            "versions": {"slmc": __version__, "python": platform.python_version(),
                         **{d: _version(d) for d in ("torch", "transformers", "onnx", "onnxruntime", "tokenizers")}},
        },
    }


def _dataset_revisions(results: Results) -> dict[str, str]:
    """Hub dataset id -> the commit the data stage read (empty for local files and built-in text)."""
    data = results.get("data")
    return dict(getattr(data, "hub_revisions", None) or {})


def _fused(results: Results) -> bool:
    optimize = results.get(OPTIMIZE)
    return optimize is not None and optimize.kv_share_buffer


def _copy_model(source: Path, dest: Path) -> None:
    shutil.copyfile(source, dest / "model.onnx")
    data = source.with_name(source.name + ".data")
    if data.exists():
        shutil.copyfile(data, dest / "model.onnx.data")


def _genai(cfg, manifest: dict, shared_buffer: bool) -> str:
    from ..export import genai_config

    provider = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda"}.get(
        manifest["runtime"]["execution_provider"], "cpu")
    # genai_config reads the decoder type from `architecture`: the family's ONNX Runtime GenAI type.
    genai_model = {**manifest["model"], "architecture": families.get(manifest["model"]["architecture"]).genai_type}
    config = genai_config(model=genai_model, io=manifest["io"], eos_token_ids=manifest["tokens"]["eos_token_ids"],
                          bos_token_id=manifest["tokens"]["bos_token_id"], pad_token_id=manifest["tokens"]["pad_token_id"],
                          max_seq_len=cfg.export.max_seq_len, generation=manifest["generation"], provider=provider)
    # A fused graph binds one KV buffer as past and present: GenAI's fast mode.
    config["search"]["past_present_share_buffer"] = shared_buffer
    return json.dumps(config, indent=2) + "\n"


def _engine_scripts(cfg, manifest: dict) -> dict[str, str]:
    from ..export.trt_build_script import render_build_engine
    from ..export.trt_profile import trt_profile

    profile = trt_profile(manifest["io"]["inputs"], max_seq_len=cfg.export.max_seq_len,
                          max_batch_size=cfg.export.max_batch_size, opt_seq_len=cfg.runtime.opt_seq_len)
    return render_build_engine(profile=profile, precision=cfg.compress.precision,
                               trt_version=cfg.device.tensorrt_version, workspace_mib=cfg.runtime.workspace_mib)


def bundle_text_files(cfg, manifest: dict, run_dir: Path, results: Results) -> dict[str, str]:
    files = {
        "tokenizer.json": (run_dir / LAYOUT.tokenizer).read_text(encoding="utf-8"),
        "tokenizer_config.json": (run_dir / LAYOUT.tokenizer_config).read_text(encoding="utf-8"),
    }
    if cfg.runtime.name == "ort":
        files["genai_config.json"] = _genai(cfg, manifest, _fused(results))
    else:
        files.update(_engine_scripts(cfg, manifest))
    draft = results.get(DRAFT)  # added to the staged bundle after these files (stages.package._add_draft)
    listed = sorted(files) + ["model.onnx"] + (["draft/model.onnx"] if draft is not None else [])
    files["README.md"] = render_template("bundle_README.md.j2", {"m": manifest, "files": listed, "draft": draft,
                                                                 "max_draft_tokens": cfg.draft.max_draft_tokens})
    return files


def build_time() -> dt.datetime:
    """Now, or SOURCE_DATE_EPOCH when set: the reproducible-builds convention for a fixed build time
    (https://reproducible-builds.org/specs/source-date-epoch/), so a rebuild can match byte for byte."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        try:
            return dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc)
        except (ValueError, OverflowError, OSError):
            raise StageError(f"SOURCE_DATE_EPOCH={epoch!r} is not a whole number of seconds since 1970",
                             where="SOURCE_DATE_EPOCH", fix="unset it, or set it to e.g. $(date +%s)") from None
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def run_package(cfg, run_dir: Path, results: Results) -> PackageResult:
    from ..runtime.manifest import manifest_json, with_hashes
    from ..runtime.verify import verify_bundle
    from . import task_eval
    from .progress import step

    created = build_time().isoformat()
    manifest = build_manifest(cfg, results, run_dir, created=created)
    with writer.staged_dir(run_dir, LAYOUT.bundle) as staging:
        _copy_model(results.model_path(run_dir), staging)
        writer.write_files(staging, bundle_text_files(cfg, manifest, run_dir, results))
        with step("hashing and verifying the bundle"):
            manifest = with_hashes(staging, manifest)
            # manifest_json stamps manifest_sha256, the checksum the runtime checks before anything else.
            writer.write_text(staging, "manifest.json", manifest_json(manifest))
            # The same check a device runs; a bundle for another machine is checked for integrity only.
            target = verify_bundle(staging, allow_foreign=True)
        draft = results.get(DRAFT)
        if draft is not None:  # the draft compiled inside this run (draft.method), checked against the target
            with step("adding the draft decoder"):
                manifest = _add_draft(cfg, staging, target, run_dir / draft.bundle)
        # eval.tasks on the checkpoint and on the staged bundle; past compress.max_accuracy_drop the
        # bundle is never published
        tasks = task_eval.measure(cfg, run_dir, staging)
        if tasks is not None:
            manifest["metrics"]["tasks"] = tasks
            writer.write_text(staging, "manifest.json", manifest_json(manifest))
    bundle = run_dir / LAYOUT.bundle
    sizes = {name: (bundle / name).stat().st_size for name in manifest["hashes"]}
    return PackageResult(bundle=LAYOUT.bundle, bytes=sum(sizes.values()), files=sizes, tasks=tasks)


def _add_draft(cfg, staging: Path, target, draft_bundle: Path) -> dict:
    from ..draft import DraftError, add_draft, checked_draft
    from ..rules._facts import usable_bytes

    try:
        draft = checked_draft(target, draft_bundle, usable_bytes(cfg.device))
    except DraftError as exc:
        raise StageError(f"the draft cannot serve this bundle: {exc.message}", where="draft",
                         fix=exc.fix) from None
    return add_draft(staging, target, draft, max_draft_tokens=cfg.draft.max_draft_tokens)


def _chat_template(results: Results) -> str | None:
    """Which chat template tokenizer_config.json ships (a catalogue name, or "checkpoint"); None for text."""
    tok = results.get("tokenizer")
    return tok.chat_template if tok is not None else None
