"""Provenance rules: values read from environment variables do not ship silently.

`${oc.env:NAME}` in a config or an override is resolved by OmegaConf before the schema
sees the value, so the resolved config cannot tell a secret from a name. The composed
config is therefore read twice when Hydra composes it (`resolve_container`): resolved,
and raw, where every `oc.env` interpolation is still visible, followed through `${key}`
references to other keys. The keys found ride on the config (`SlmcConfig._environment`)
to the rule below.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ._engine import rule

BUNDLE_TEXT = {
    "run_name": "the bundle's manifest.json (name) and README.md (title)",
    "device.name": "the bundle's manifest.json and README.md",
    "device.isa": "the bundle's manifest.json and README.md",
    "device.tensorrt_version": "the bundle's manifest.json, README.md and build_engine.sh",
    "device.ort_execution_provider": "the bundle's manifest.json and genai_config.json",
}
"""Config strings the package stage writes into the bundle as they are."""

LOCAL_PATHS = ("out_dir", "init.path", "init.distill.teacher_path", "data.train_files", "data.heldout_files",
               "data.tokenizer")
"""Paths on the build machine (`${oc.env:HOME}/data` is how people write them); nothing here
ships, and a warning for each would bury the one that matters."""

_ENV = re.compile(r"\boc\.env\s*:\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)")
_REF = re.compile(r"\$\{\s*(\.*[A-Za-z_][\w.\[\]]*)\s*\}|\boc\.select\s*:\s*(\.*[A-Za-z_][\w.\[\]]*)")


class Resolved(dict):
    """A resolved config as plain data, plus `environment`: key -> the variables its value came from."""

    environment: dict[str, tuple[str, ...]] = {}


def resolve_container(cfg: Any) -> Resolved:
    """OmegaConf's resolved container of a composed config, remembering which keys read the environment."""
    from omegaconf import OmegaConf

    resolved = Resolved(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))
    resolved.environment = environment_sources(OmegaConf.to_container(cfg, resolve=False))
    return resolved


def environment_sources(raw: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Dotted key -> environment variables its unresolved value reads, directly (`${oc.env:X}`)
    or through the keys it interpolates (`${host.name}`, `${.name}`, `${oc.select:key}`)."""
    leaves = dict(_leaves(raw))
    direct = {key: set(_ENV.findall(value)) for key, value in leaves.items() if isinstance(value, str)}
    refs = {key: {_absolute(key, ref) for ref in _references(value)}
            for key, value in leaves.items() if isinstance(value, str) and "${" in value}
    found = {key: names for key, names in direct.items() if names}
    changed = True
    while changed:  # a fixpoint: references may chain (a -> b -> c -> oc.env)
        changed = False
        for key, targets in refs.items():
            names = set(found.get(key, ()))
            for target in targets:
                for other, other_names in found.items():
                    if other == target or other.startswith(target + ".") or other.startswith(target + "["):
                        names |= other_names
            if names and names != found.get(key):
                found[key], changed = names, True
    return {key: tuple(sorted(names)) for key, names in sorted(found.items())}


def _leaves(node: Any, prefix: str = ""):
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, f"{prefix}[{index}]")
    else:
        yield prefix, node


def _references(value: str) -> list[str]:
    return [plain or selected for plain, selected in _REF.findall(value)]


def _absolute(key: str, ref: str) -> str:
    """`${.x}` is a sibling of key, `${..x}` a sibling of its parent; anything else is absolute."""
    dots = len(ref) - len(ref.lstrip("."))
    if not dots:
        return ref
    parents = key.split(".")[:-1]
    base = parents[: len(parents) - (dots - 1)] if dots - 1 <= len(parents) else []
    rest = ref[dots:]
    return ".".join([*base, rest] if rest else base)


@rule("provenance.environment_values", "warning")
def environment_values(rule, cfg, ctx):
    """A config value read from an environment variable (`${oc.env:NAME}`) is written as is into what slmc produces: into the bundle for run_name and the device strings, into the run folder's config.yaml for the rest (local paths excepted). A secret there ships with the model."""
    sources = getattr(cfg, "_environment", None) or {}  # recorded by load.validate from the raw config
    for key, names in sources.items():
        if key.split("[")[0] in LOCAL_PATHS:
            continue
        shown = ", ".join(f"${name}" for name in names)
        where = BUNDLE_TEXT.get(key)
        if where:
            message = (f"{key} comes from the environment ({shown}); its value is written as plain text into "
                       f"{where}, which ship to the device")
        else:
            message = (f"{key} comes from the environment ({shown}); its value is written as plain text into the "
                       "run folder's config.yaml and hashed into the bundle's config_sha256")
        yield rule.violation((key.split("[")[0],), message,
                             f"set {key} to a literal value; never pass a secret through the config")
