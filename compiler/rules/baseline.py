"""Regression-gate rules: the baseline named by targets.baseline exists, is a bundle, and can be
compared with what this config builds (docs/regression-gate.md).

What is checked here, before anything runs: the baseline's manifest (schema, its own checksum,
its hashed files present; the file hashes themselves are checked when the gate loads it), the
device class (kind, arch, runtime, execution provider) and, when the candidate's tokenizer is
a file this config names (data.tokenizer, or the tokenizer.json of init.path or the teacher),
that it is byte-identical to the baseline's. A tokenizer the run trains (init=scratch without
data.tokenizer) does not exist yet: the gate compares the two tokenizer.json hashes after the
tokenizer stage has made it, and fails (exit 3) when they differ.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ..compare.locate import device_class, locate, sha256_bytes
from ._engine import rule
from .context import ensure_context

TOLERANCES = ("max_ppl_increase", "max_accuracy_drop", "min_speed_ratio", "max_size_ratio")


@lru_cache(maxsize=8)
def _read(path: str, stamp: tuple) -> tuple[dict | None, str | None, str | None]:
    """(manifest, bundle folder, problem) of the baseline path; `stamp` keys the cache on the file's state."""
    from ..runtime.errors import BundleError
    from ..runtime.manifest import read_manifest

    found = locate(path)
    if not found.given.exists():
        return None, None, f"{found.given} does not exist"
    if found.bundle is None:
        return None, None, f"{found.given} is neither a bundle folder (manifest.json) nor a run folder with bundle/"
    try:
        manifest = read_manifest(found.bundle)
    except BundleError as exc:
        return None, str(found.bundle), exc.render()
    missing = [n for n in manifest["hashes"] if not (found.bundle / n).is_file()]
    if missing:
        return None, str(found.bundle), f"{found.bundle} lacks files its manifest lists: {', '.join(sorted(missing)[:4])}"
    return manifest, str(found.bundle), None


def baseline_manifest(cfg) -> tuple[dict | None, str | None, str | None]:
    path = cfg.targets.baseline
    folder = locate(path)
    manifest = (folder.bundle or folder.given) / "manifest.json"
    try:
        st = manifest.stat()
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    except OSError:
        stamp = (None,)
    return _read(path, stamp)


def candidate_tokenizer(cfg, ctx) -> tuple[str, str] | None:
    """(config path, tokenizer.json path) of the tokenizer this config reuses, when it is a local file now."""
    if ctx.tokenizer is not None:
        return ("data.tokenizer" if cfg.data.tokenizer else "init.path"), ctx.tokenizer.path
    if cfg.init.kind == "distill" and ctx.teacher_tokenizer is not None:
        return "init.distill.teacher_path", ctx.teacher_tokenizer.path
    return None


@rule("targets.baseline_bundle")
def baseline_bundle(rule, cfg, ctx):
    """targets.baseline names a bundle folder (or a run folder holding bundle/) whose manifest is valid and whose files are all there."""
    if not cfg.targets.baseline:
        return
    manifest, folder, problem = baseline_manifest(cfg)
    if manifest is None:
        yield rule.violation(("targets.baseline",), f"targets.baseline: {problem}",
                             "point targets.baseline at a bundle slmc packaged (generated/<run>/bundle) or its run folder")
        return
    own = _own_bundle(cfg)
    if own is not None and Path(folder) == own:
        yield rule.violation(("targets.baseline", "out_dir", "run_name"),
                             f"targets.baseline is this run's own bundle ({own}), which this compile replaces",
                             f"copy it first (cp -r {own} baseline/) and set targets.baseline=baseline")


def _own_bundle(cfg) -> Path | None:
    from ..errors import SlmcError
    from ..layout import LAYOUT
    from ..load import run_name

    try:
        return (Path(cfg.out_dir).expanduser() / run_name(cfg) / LAYOUT.bundle).resolve()
    except SlmcError:  # a bad run_name: the config rules report it
        return None


@rule("targets.baseline_comparable")
def baseline_comparable(rule, cfg, ctx):
    """The baseline can be compared with this config's bundle: both ONNX Runtime bundles (the gate measures them here), the same device class (kind, arch, execution provider) and, where the tokenizer is a file the config names, the same tokenizer.json bytes (a tokenizer trained by the run is compared by the gate after the tokenizer stage)."""
    if not cfg.targets.baseline:
        return
    manifest, _, _ = baseline_manifest(cfg)
    if manifest is None:
        return  # targets.baseline_bundle says why
    theirs = device_class(manifest)
    if cfg.runtime.name != "ort" or theirs["runtime"] != "ort":
        yield rule.violation(("targets.baseline", "runtime.name"),
                             f"the regression gate measures both bundles with ONNX Runtime here; the baseline runs on "
                             f"{theirs['runtime']} and this config on {cfg.runtime.name}",
                             "compare two runtime=ort bundles (a TensorRT engine is built and measured on the device)")
        return
    d = cfg.device
    ours = {"kind": d.kind, "arch": d.arch, "execution_provider": d.ort_execution_provider}
    differ = [f"{k} {theirs[k]} (baseline) vs {v}" for k, v in ours.items() if theirs[k] is not None and theirs[k] != v]
    if differ:
        yield rule.violation(("targets.baseline", "device"),
                             f"the baseline was compiled for another device class: {'; '.join(differ)}",
                             f"compile against a baseline for device={d.name}, or set device= to the baseline's "
                             f"({manifest['device'].get('name')})")
    ctx = ensure_context(cfg, ctx)
    reused = candidate_tokenizer(cfg, ctx)
    expected = manifest["hashes"].get(manifest["files"]["tokenizer"])
    if reused is not None and expected is not None:
        key, path = reused
        try:
            same = sha256_bytes(Path(path)) == expected
        except OSError:
            return  # unreadable: the data rules report it
        if not same:
            yield rule.violation(("targets.baseline", key),
                                 f"{path} differs from the baseline's tokenizer.json: perplexities and tasks would "
                                 "be scored on different tokens",
                                 f"use the baseline's tokenizer (data.tokenizer={Path(manifest_folder(cfg)) / 'tokenizer.json'})")


def manifest_folder(cfg) -> str:
    return baseline_manifest(cfg)[1] or cfg.targets.baseline


@rule("targets.baseline_tolerances", "warning")
def baseline_tolerances(rule, cfg, ctx):
    """Tolerances and the baseline come together: a baseline without any tolerance is measured and reported but can never fail the compile; a tolerance without a baseline does nothing."""
    t = cfg.targets
    set_ = [f"targets.{name}" for name in TOLERANCES if getattr(t, name) is not None]
    if t.baseline and not set_:
        yield rule.violation(("targets.baseline",),
                             "targets.baseline is set without a tolerance: the gate reports but never fails",
                             "set e.g. targets.max_ppl_increase=0.05 targets.min_speed_ratio=0.9")
    elif set_ and not t.baseline:
        yield rule.violation(tuple(set_), f"{', '.join(set_)} without targets.baseline: nothing is compared",
                             "set targets.baseline=<bundle folder> or remove the tolerance")
    if t.max_accuracy_drop is not None and t.baseline and not tuple(getattr(getattr(cfg, "eval", None), "tasks", ()) or ()):
        yield rule.violation(("targets.max_accuracy_drop",),
                             "targets.max_accuracy_drop without eval.tasks: no task accuracy is measured",
                             "list task files in eval.tasks, or remove targets.max_accuracy_drop")
