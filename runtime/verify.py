"""Refuse a bundle that is tampered with, incomplete, or not meant for this machine.

Integrity (manifest.json's own checksum, file hashes, unexpected files, paths, and
only regular files: no link, FIFO or device node is ever opened) is never overridable; compatibility (runtime, ORT version, execution provider, machine
arch) is, with allow_foreign, for experts who know the ONNX file runs anyway.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path, PurePosixPath

import onnxruntime as ort

from slmc.runtime.errors import BundleError, IncompatibleBundle
from slmc.runtime.manifest import MANIFEST_NAME, Manifest, bundle_files, read_manifest, sha256_file

_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "x86-64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}


def normalize_arch(arch: str) -> str:
    """platform.machine() spellings differ by OS (AMD64 on Windows, arm64 on macOS)."""
    arch = arch.strip().lower()
    return _ARCH_ALIASES.get(arch, arch)


def version_tuple(text: str) -> tuple[int, ...]:
    """'1.32.0' -> (1, 32, 0); '1.20' -> (1, 20); trailing tags ('1.21.0rc1') are ignored."""
    parts = []
    for piece in text.split("."):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def _safe_relative(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name


# What build_engine.sh writes next to the ONNX file on a TensorRT device: made on
# the device, so it cannot be hashed at compile time; the runtime never loads it.
DEVICE_BUILT = frozenset({"model.engine", "timing.cache"})


def _device_built(data: dict, name: str) -> bool:
    return data["runtime"]["name"] == "tensorrt" and name in DEVICE_BUILT


def integrity_problems(folder: Path, data: dict) -> list[str]:
    """Every file in hashes present and matching; no other file; roles point at hashed files.

    The folder is walked first (`bundle_files`), so a link, FIFO or device node anywhere in
    it is refused (BundleError) before any file is opened; only regular files are hashed.
    """
    present = set(bundle_files(folder))
    hashes = data["hashes"]
    problems = [f"{name}: unsafe path in hashes" for name in hashes if not _safe_relative(name)]
    for name, expected in sorted(hashes.items()):
        if not _safe_relative(name):
            continue
        if name not in present:
            problems.append(f"{name}: listed in hashes but missing")
            continue
        try:
            actual = sha256_file(folder / name)
        except BundleError as exc:  # swapped for something else since the walk
            problems.append(f"{name}: {exc.message}")
            continue
        except OSError as exc:
            problems.append(f"{name}: cannot be read ({exc.strerror or exc})")
            continue
        if actual != expected:
            problems.append(f"{name}: sha256 does not match the manifest (modified or corrupt)")
    for name in sorted(present):
        if name not in hashes and not _device_built(data, name):
            problems.append(f"{name}: unexpected file, not listed in the manifest's hashes")
    for role, name in data["files"].items():
        if not isinstance(name, str) or name not in hashes:
            problems.append(f"{name}: files.{role} names a file that is not in hashes")
    return problems


def compatibility_problems(data: dict) -> list[str]:
    """Runtime, ORT version, execution provider and arch, checked against this machine."""
    runtime, problems = data["runtime"], []
    if runtime["name"] == "tensorrt":
        problems.append(
            "runtime is tensorrt: build the engine on the device with build_engine.sh "
            "(or pass --allow-foreign to run the ONNX model with ONNX Runtime)"
        )
    if version_tuple(ort.__version__) < version_tuple(runtime["min_onnxruntime"]):
        problems.append(f"onnxruntime {ort.__version__} is older than runtime.min_onnxruntime "
                        f"{runtime['min_onnxruntime']}: upgrade onnxruntime")
    provider = runtime["execution_provider"]
    if provider not in ort.get_available_providers():
        problems.append(f"execution provider {provider} is not available here "
                        f"(available: {', '.join(ort.get_available_providers())})")
    arch = data["device"]["arch"]
    if arch != "any" and normalize_arch(arch) != normalize_arch(platform.machine()):
        problems.append(f"bundle targets arch {arch}, this machine is {platform.machine()}")
    return problems


RUN_BUNDLE = "bundle"
"""Where a run folder (generated/<run>/) keeps its bundle; the compiler's layout says the same."""


def bundle_folder(path: str | Path) -> Path:
    """The bundle folder a person means: the path itself, or the bundle/ of a run folder.

    `slmc run generated/<run>` names the run, not its bundle: a folder without a
    manifest.json of its own but with a bundle/ folder is taken as a run folder.
    """
    root = Path(path).expanduser().resolve()
    inner = root / RUN_BUNDLE
    if root.is_dir() and not os.path.lexists(root / MANIFEST_NAME) and inner.is_dir():
        return inner.resolve()
    return root


def model_load_fix(reason: str) -> str:
    """A fix that fits why ONNX Runtime refused a verified model file (its error text).

    The hashes held, so the file is what was packaged: the cause is in the graph itself
    (a path, an operator, a version) or in this onnxruntime, and each needs another fix.
    """
    version = ort.__version__
    if "external data" in reason.lower():
        return ("the model names weights outside the bundle folder (an absolute or '../' external-data path), "
                "which ONNX Runtime refuses to read: do not use this bundle; get it again from its source or "
                "re-package it with slmc, which keeps weights in model.onnx.data next to model.onnx")
    custom = re.search(r"([\w.]+):(\w+)\(-?\d+\) is not a registered function/op", reason)
    if custom and custom.group(1) not in ("ai.onnx", "com.microsoft"):
        return (f"the model uses the custom operator {custom.group(1)}:{custom.group(2)}, which no onnxruntime "
                "implements without its own library: re-export the model with slmc (standard ONNX and "
                "com.microsoft operators only), or register that operator library if you trust it")
    missing = custom or re.search(r"No Op registered for (\w+)", reason)
    if missing:
        op = missing.group(missing.lastindex)
        return (f"onnxruntime {version} does not implement the operator {op} the model uses: install the "
                "onnxruntime build the bundle targets (runtime.version and runtime.execution_provider in "
                "manifest.json), or re-export the model for this one")
    if re.search(r"Opset \d+ is under development|IR version|opset .* not supported", reason, re.IGNORECASE):
        return (f"the model needs a newer onnxruntime than {version}: upgrade onnxruntime, or re-export the "
                "model with a lower export.opset")
    if "protobuf parsing failed" in reason:
        return "model.onnx is not a valid ONNX file although its hash matches: re-export and re-package the bundle"
    return "re-export and re-package the bundle with slmc for this onnxruntime"


def verify_bundle(folder: str | Path, *, allow_foreign: bool = False) -> Manifest:
    """The bundle's Manifest if it is intact and runs here; else BundleError / IncompatibleBundle.

    folder: the bundle, or a run folder holding one in bundle/. allow_foreign=True skips
    only the compatibility checks, never the hashes.
    """
    root = bundle_folder(folder)
    # First: manifest.json's own checksum (manifest_sha256) and schema; no value of it,
    # not even the file hashes, is used before the checksum holds.
    data = read_manifest(root)
    problems = integrity_problems(root, data)
    if problems:
        raise BundleError("; ".join(problems), where=str(root),
                          fix="re-copy the bundle from its source or re-package it; never edit bundle files")
    problems = compatibility_problems(data)
    if problems and not allow_foreign:
        raise IncompatibleBundle("; ".join(problems), where=f"{root}/{MANIFEST_NAME}",
                                 fix="use a bundle compiled for this device, or --allow-foreign if you know it runs")
    return Manifest(folder=root, data=data)
