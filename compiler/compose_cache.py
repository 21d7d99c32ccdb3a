"""An on-disk cache of Hydra's composed configs, so that a repeated `slmc check` does not import Hydra.

An entry is exactly what `compose._hydra` returned, stored under a key made of
everything that decides that result: the overrides (in order), the config
folders and the bytes of every file in them, the schema's defaults, and the
installed Hydra, OmegaConf and Hydra plugins. Computing the key reads the conf
tree (a few ms); a change anywhere is a new key, never a stale answer. Results
that depend on more than that (interpolations such as `${oc.env:...}`, overrides
of Hydra's own settings, configs from a search-path plugin) are not stored, nor
are errors.

Where: $SLMC_CACHE_DIR, else $XDG_CACHE_HOME/slmc, else ~/.cache/slmc; a folder
that cannot be written just means no cache. SLMC_COMPOSE_CACHE=0 turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

FORMAT = "slmc-compose-1"
MAX_ENTRIES = 512
"""Past this many entries the oldest are removed (each is a few KB)."""


def cache_dir() -> Path | None:
    if os.environ.get("SLMC_COMPOSE_CACHE", "1") == "0":
        return None
    root = os.environ.get("SLMC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "slmc")
    return Path(root) / "compose"


def key(overrides: Sequence[str], config_dirs: Sequence[Path]) -> str | None:
    """The entry's name, or None when this composition is not cached."""
    if cache_dir() is None or any(_touches_hydra(o) for o in overrides):
        return None
    from .compose import conf_dir
    from .schema import schema_defaults

    digest = hashlib.sha256(FORMAT.encode())
    digest.update(json.dumps([list(overrides), [str(d) for d in config_dirs]]).encode())
    for folder in (conf_dir(), *config_dirs):
        tree = _tree_fingerprint(Path(folder))
        if tree is None:
            return None
        digest.update(tree)
    digest.update(json.dumps(schema_defaults()).encode())
    digest.update(_libraries_fingerprint().encode())
    return digest.hexdigest()


def load(name: str | None) -> dict[str, Any] | None:
    folder = cache_dir()
    if name is None or folder is None:
        return None
    try:
        entry = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("format") != FORMAT or not isinstance(entry.get("config"), dict):
        return None
    return entry["config"]


def store(name: str | None, config: dict[str, Any]) -> None:
    folder = cache_dir()
    if name is None or folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Written whole, then renamed into place: a reader sees the old entry, the new one or none.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"format": FORMAT, "config": config}, out)
        os.replace(tmp, folder / f"{name}.json")
        _prune(folder)
    except OSError:
        return  # a read-only or full disk costs speed, never correctness


def _prune(folder: Path) -> None:
    entries = list(folder.glob("*.json"))
    if len(entries) <= MAX_ENTRIES:
        return
    entries.sort(key=lambda p: p.stat().st_mtime_ns)
    for old in entries[: len(entries) - MAX_ENTRIES * 3 // 4]:
        old.unlink(missing_ok=True)


def _touches_hydra(override: str) -> bool:
    """Overrides of Hydra's own config (hydra.searchpath, hydra/launcher, ...) can change where configs
    come from; those compositions go to Hydra every time."""
    name = override.lstrip("+~").split("=", 1)[0]
    return name == "hydra" or name.startswith(("hydra.", "hydra/", "hydra@"))


def _tree_fingerprint(folder: Path) -> bytes | None:
    """Every file under `folder` (links followed, as Hydra follows them) by relative path and content."""
    digest = hashlib.sha256(str(folder).encode())
    seen: set[str] = set()
    try:
        for root, dirs, files in os.walk(folder, followlinks=True):
            real = os.path.realpath(root)
            if real in seen:  # a link back up the tree
                dirs.clear()
                continue
            seen.add(real)
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                path = os.path.join(root, name)
                digest.update(os.path.relpath(path, folder).encode() + b"\0")
                with open(path, "rb") as handle:
                    digest.update(hashlib.sha256(handle.read()).digest())
    except OSError:
        return None
    return digest.digest()


def _libraries_fingerprint() -> str:
    """The installed Hydra and OmegaConf (their files change on any reinstall) and the Hydra plugins
    present (a launcher or search-path plugin can add configs), found without importing them."""
    from importlib.util import find_spec

    parts = []
    for module in ("hydra", "omegaconf"):
        spec = find_spec(module)
        origin = spec.origin if spec else None
        if origin:
            stat = os.stat(origin)
            parts.append(f"{origin}:{stat.st_mtime_ns}:{stat.st_size}")
    spec = find_spec("hydra_plugins")
    for location in sorted(spec.submodule_search_locations or []) if spec else []:
        try:
            parts += [f"{location}/{entry.name}:{entry.stat().st_mtime_ns}" for entry in
                      sorted(os.scandir(location), key=lambda e: e.name)]
        except OSError:
            parts.append(f"{location}:unreadable")
    return "\n".join(parts)
