"""Where a bundle and its run folder are, from a path a person gives (either one).

Light on purpose (no onnxruntime): the check-time rules use it, and `slmc check` stays fast.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..layout import LAYOUT
from ..runtime.manifest import MANIFEST_NAME


@dataclass(frozen=True)
class Located:
    """A bundle folder and the run folder it was compiled in (either may be None)."""

    given: Path
    bundle: Path | None
    run: Path | None

    @property
    def label(self) -> str:
        return str(self.given)


def locate(path: str | Path) -> Located:
    """A bundle folder (has manifest.json; its parent is its run when that has config.yaml), or a run
    folder (has bundle/manifest.json, config.yaml or plan.json; its bundle/ when packaged), as
    `slmc run` takes either. Nothing found: both None."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        return Located(root, None, None)
    if os.path.lexists(root / MANIFEST_NAME):
        parent = root.parent
        run = parent if (parent / LAYOUT.config).is_file() else None
        return Located(root, root, run)
    bundle = root / LAYOUT.bundle
    packaged = (bundle / MANIFEST_NAME).is_file()
    if packaged or (root / LAYOUT.config).is_file() or (root / LAYOUT.plan).is_file():
        return Located(root, bundle if packaged else None, root)
    return Located(root, None, None)


def sha256_bytes(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def device_class(manifest: dict[str, Any]) -> dict[str, Any]:
    """What makes two bundles' speeds comparable: the device's kind and arch and the runtime that runs them.
    `kind` is absent from manifests packaged before the gate existed."""
    device, runtime = manifest.get("device", {}), manifest.get("runtime", {})
    return {"kind": device.get("kind"), "arch": device.get("arch"),
            "runtime": runtime.get("name"), "execution_provider": runtime.get("execution_provider")}
