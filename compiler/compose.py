"""The one way slmc composes a config: Hydra's Compose API over conf/, the schema's defaults underneath.

`conf/config.yaml`'s defaults list starts with `schema`: the defaults of
compiler/schema.py, registered in Hydra's ConfigStore before every composition
(here, and by hydra_app before `hydra.main`), so each YAML option file holds only
what that option changes. Your own option files (a device, a model) come in
through `config_dirs`, which become `hydra.searchpath` for `slmc check` and
`slmc compile` alike.

Hydra costs ~0.7 s to import and compose cold, so its resolved result is cached
on disk (compose_cache): a repeated `slmc check` answers without importing
Hydra. The cache only ever holds what Hydra returned, keyed by everything that
decides it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

SCHEMA_NODE = "schema"
"""The ConfigStore name conf/config.yaml lists first in its defaults."""


@lru_cache(maxsize=1)
def conf_dir() -> Path:
    """The shipped Hydra config folder (works for editable and regular installs)."""
    from . import conf  # a plain package; its folder is the config folder (importlib.resources costs ~5 ms)

    return Path(conf.__file__).parent


def register_schema_defaults() -> None:
    """Put the schema's defaults where conf/config.yaml's defaults list finds them."""
    from hydra.core.config_store import ConfigStore

    from .schema import schema_defaults

    ConfigStore.instance().store(name=SCHEMA_NODE, node=schema_defaults(), provider="slmc")


def search_path_overrides(config_dirs: Sequence[Path]) -> list[str]:
    """Your config folders as the Hydra override that adds them to the search path (after conf/,
    so a shipped option keeps its meaning; a new file adds an option)."""
    if not config_dirs:
        return []
    return ["hydra.searchpath=[" + ",".join(hydra_quote(f"file://{d}") for d in config_dirs) + "]"]


def hydra_quote(text: str) -> str:
    """`text` as a quoted Hydra override value: in Hydra's quoted strings a backslash escapes only a
    quote or the end of the string, so only those runs are doubled."""
    doubled = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, text)
    return "'" + doubled.replace("'", "\\'") + "'"


def compose(overrides: Sequence[str], config_dirs: Sequence[Path] = ()) -> dict[str, Any]:
    """The composed, resolved config as plain data: from the cache when Hydra already answered this."""
    from . import compose_cache

    key = compose_cache.key(overrides, config_dirs)
    cached = compose_cache.load(key)
    if cached is not None:
        return cached
    config, cacheable = _hydra(overrides, config_dirs)
    # Stored only if no config file changed while Hydra read them (the key is their content).
    if cacheable and key is not None and compose_cache.key(overrides, config_dirs) == key:
        compose_cache.store(key, config)
    return config


def hydra_compose(overrides: Sequence[str], config_dirs: Sequence[Path] = ()) -> dict[str, Any]:
    """Hydra's answer, never the cache's (tests compare the two)."""
    return _hydra(overrides, config_dirs)[0]


def _hydra(overrides: Sequence[str], config_dirs: Sequence[Path]) -> tuple[dict[str, Any], bool]:
    """Hydra's composition resolved to plain data, and whether the cache may keep it."""
    from hydra import compose as hydra_compose_api
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from .rules.provenance import resolve_container

    register_schema_defaults()
    with initialize_config_dir(str(conf_dir()), version_base=None, job_name="slmc"):
        cfg = hydra_compose_api("config", overrides=[*overrides, *search_path_overrides(config_dirs)],
                                return_hydra_config=True)
    sources = OmegaConf.to_container(cfg.hydra.runtime.config_sources)
    job = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    unresolved = OmegaConf.to_container(job, resolve=False)
    config = resolve_container(job)  # resolved, plus the keys read from the environment (never cached)
    return config, _only_known_sources(sources, config_dirs) and _plain(unresolved)


def _only_known_sources(sources: list[dict], config_dirs: Sequence[Path]) -> bool:
    """Every config came from a folder the cache key hashes, Hydra's own package, or the ConfigStore."""
    folders = {Path(p).resolve() for p in (conf_dir(), *config_dirs)}
    for source in sources:
        if source["schema"] == "file" and Path(source["path"]).resolve() in folders:
            continue
        if source["schema"] == "structured" or (source["schema"] == "pkg" and source["path"] == "hydra.conf"):
            continue
        return False  # e.g. a search-path plugin's package: its files are not in the key
    return True


def _plain(value: Any) -> bool:
    """JSON keeps it exactly, and nothing in it depends on the environment (no `${...}`)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, str):
        return "${" not in value
    return value is None or type(value) in (bool, int, float)
