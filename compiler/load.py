"""Load: Hydra compose -> plain data -> typed, frozen `SlmcConfig`.

Every way a description can be wrong at this level (unknown group option,
unknown key, wrong type, missing mandatory value) becomes one `ConfigError`
that names the config path; none escapes as a traceback.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from .compose import compose_simple
from .errors import ConfigError
from .schema import SlmcConfig

GROUPS = ("device", "model", "init", "train", "compress", "runtime", "data")


@lru_cache(maxsize=1)
def conf_dir() -> Path:
    """The shipped Hydra config folder (works for editable and regular installs)."""
    from . import conf  # a plain package; its folder is the config folder (importlib.resources costs ~5 ms)

    return Path(conf.__file__).parent


def available_options(group: str) -> list[str]:
    """Option names of a config group, from the YAML files that ship."""
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def hydra_compose(overrides: Sequence[str]) -> dict[str, Any]:
    """Hydra's compose API, resolved to plain data: the source of truth for every config."""
    from hydra import compose, initialize_config_dir

    from .rules.provenance import resolve_container

    with initialize_config_dir(str(conf_dir()), version_base=None, job_name="slmc"):
        cfg = compose("config", overrides=list(overrides))
    return resolve_container(cfg)  # also notes which keys read environment variables


def compose_raw(overrides: Sequence[str]) -> dict[str, Any]:
    """Compose the Hydra config and return it as plain data with interpolations resolved.

    Plain YAML merging when that is all Hydra would do (`compose.compose_simple`: no Hydra
    import, so `slmc check` starts fast); Hydra for everything else, errors included.
    """
    raw = compose_simple(conf_dir(), overrides)
    if raw is not None:
        return raw
    from hydra.errors import HydraException
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    # Hydra rejects some override values with plain exceptions: ValueError (`train=null`),
    # TypeError (`device=[[]]`), OSError (an option name looked up as a file is too long).
    errors = (HydraException, OmegaConfBaseException, ValueError, TypeError, OSError)
    try:
        return hydra_compose(overrides)
    except MissingMandatoryValue as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(
            "a required value is missing (it is '???' in the shipped config)",
            where=key,
            fix=f"set it on the command line, e.g. {key}=...",
        ) from None
    except errors as exc:
        culprit = _culprit(exc, overrides, errors)
        raise ConfigError(_hydra_message(exc, culprit), where=_hydra_where(exc, culprit, overrides),
                          fix=_hydra_fix(exc)) from None


def _culprit(exc: Exception, overrides: Sequence[str], errors: tuple) -> str | None:
    """The override that breaks composition: named by Hydra, the only one, or the first that fails alone."""
    named = getattr(exc, "override", None)
    if named is not None or len(overrides) <= 1:
        return named if named is not None else (overrides[0] if overrides else None)
    for override in overrides:  # only on this error path: each try is one compose (~50 ms)
        try:
            hydra_compose([override])
        except errors:
            return override
    return None


def _hydra_message(exc: Exception, culprit: str | None) -> str:
    text = str(exc).strip().split("\nConfig search path:")[0].strip()
    cause = exc.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text = f"{text}\n{str(cause).strip()}"
    if culprit is not None and f"'{culprit}'" not in text:
        text = f"in the override {culprit!r}: {text}"
    return text


def _hydra_where(exc: Exception, culprit: str | None, overrides: Sequence[str] = ()) -> str | None:
    """The config path a Hydra/OmegaConf error is about, when there is one to name."""
    key = getattr(exc, "full_key", None) or getattr(exc.__cause__, "full_key", None)
    if key:
        return str(key)
    text = str(exc)
    match = (re.search(r"override '([^'=]+)", text) or re.search(r"Could not find '([^/']+)/", text)
             or re.search(r"Key '([^']+)' is not in struct", text))
    if match:
        return match.group(1).lstrip("+~")
    if culprit is not None:
        return culprit.split("=", 1)[0].lstrip("+~").strip() or None
    # Overrides that fail only together (`~a ~a`): the key the message quotes.
    keys = [o.split("=", 1)[0].lstrip("+~").strip() for o in overrides]
    return next((key for key in keys if key and f"'{key}'" in text), None)


def _hydra_fix(exc: Exception) -> str:
    text = str(exc)
    match = re.search(r"Could not find '([^/']+)/", text) or re.search(r"In '(\w+)':", text)
    if match and match.group(1) in GROUPS:
        group = match.group(1)
        return f"choose one of {', '.join(available_options(group))} for {group}"
    if "not in struct" in text or "Could not override" in text:
        return "check the key's spelling against `slmc explain` (unknown keys are errors)"
    return "see `slmc compile --help` for the override syntax (key=value, group=option)"


def validate(raw: dict[str, Any]) -> SlmcConfig:
    """Check plain data against the typed schema; every problem is listed with its path."""
    from pydantic import ValidationError

    try:
        cfg = SlmcConfig.model_validate(raw)
    except ValidationError as exc:
        lines, paths = [], []
        for err in exc.errors():
            path = ".".join(str(p) for p in err["loc"])
            paths.append(path)
            lines.append(f"{path}: {_describe(err)}")
        raise ConfigError(
            f"{len(lines)} invalid value(s) in the config:\n  " + "\n  ".join(lines),
            where=", ".join(dict.fromkeys(paths)),
            fix="correct the listed keys; `slmc explain GROUP` shows each field and its meaning",
        ) from None
    run_name(cfg)  # the run folder's name comes from config values: refuse one that is not a plain name
    cfg._environment = dict(getattr(raw, "environment", {}))  # see rules/provenance.py
    return cfg


def _describe(err: dict) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key (not part of the schema)"
    if err["type"] == "missing":
        return "required key is missing"
    got = err.get("input")
    shown = repr(got)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{err['msg']} (got {shown})"


def load_config(overrides: Sequence[str] = ()) -> SlmcConfig:
    """Compose + validate: the only way the rest of slmc gets a config."""
    return validate(compose_raw(overrides))


def config_hash(cfg: SlmcConfig) -> str:
    """sha256 of the resolved config (canonical JSON); names runs and keys provenance."""
    payload = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def run_name(cfg: SlmcConfig) -> str:
    """The run folder's name: explicit `run_name`, or the group choices plus a config hash."""
    if cfg.run_name is not None:
        if not _SAFE_NAME.match(cfg.run_name) or ".." in cfg.run_name:
            raise ConfigError(
                f"run name {cfg.run_name!r} is not a plain folder name",
                where="run_name",
                fix="use letters, digits, '.', '_' and '-' only (no '/', no '..', not absolute)",
            )
        return cfg.run_name
    from .checkpoint import effective_model_name  # init=pretrained|prune: the checkpoint's family-size

    parts = {"model.name": effective_model_name(cfg), "init.name": cfg.init.name, "train.name": cfg.train.name,
             "compress.name": cfg.compress.name, "device.name": cfg.device.name, "runtime.name": cfg.runtime.name}
    name = "-".join(parts.values()) + "-" + config_hash(cfg)[:8]
    bad = [key for key, part in parts.items() if not _SAFE_PART.match(part) or ".." in part]
    if bad or not _SAFE_NAME.match(name):
        where = ", ".join(bad) or "run_name"
        raise ConfigError(
            f"the run folder's name is made of {', '.join(parts)}; {where} cannot be part of a plain folder name "
            f"({', '.join(repr(parts[k]) for k in bad) or repr(name[:40] + '...')})",
            where=where,
            fix="use letters, digits, '.', '_' and '-' in these names (no '/', no '..'), or set run_name=...",
        )
    return name
