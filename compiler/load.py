"""Load: Hydra compose -> plain data -> typed, frozen `SlmcConfig`.

Every way a description can be wrong at this level (unknown group option,
unknown key, wrong type, missing mandatory value) becomes one `ConfigError`
that names the config path and, for a typo, the nearest key or option; none
escapes as a traceback.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Sequence

from .compose import compose, conf_dir, hydra_compose
from .errors import ConfigError
from .schema import Section, SlmcConfig

GROUPS = ("device", "model", "init", "train", "compress", "runtime", "data")

__all__ = ["GROUPS", "available_options", "compose_raw", "conf_dir", "config_dirs", "config_hash",
           "load_config", "run_name", "validate"]


def config_dirs(paths: Sequence[str | Path]) -> tuple[Path, ...]:
    """`--config-dir` folders as absolute paths, each checked to be a folder."""
    found = []
    for path in paths:
        folder = Path(path).expanduser().resolve()
        if not folder.is_dir():
            raise ConfigError(f"config folder {str(path)!r} does not exist or is not a folder", where="--config-dir",
                              fix="pass a folder laid out like conf/, e.g. MY_CONF/device/my_board.yaml "
                                  "(see docs/examples/conf)")
        if "${" in str(folder):
            raise ConfigError(f"config folder {str(folder)!r} contains '${{', which Hydra reads as an interpolation",
                              where="--config-dir", fix="rename or link the folder to a path without '${'")
        shadowed = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.yaml")
                          if (conf_dir() / p.relative_to(folder)).is_file())
        if shadowed:
            # Hydra searches the shipped conf/ first: these files would be silently ignored.
            raise ConfigError(f"{', '.join(shadowed)} in {folder} has the name of a shipped config, which Hydra "
                              "would use instead", where="--config-dir",
                              fix="give your options new names (device/my_board.yaml) and choose them on the "
                                  "command line (device=my_board)")
        found.append(folder)
    return tuple(found)


def available_options(group: str, extra_dirs: Sequence[Path] = ()) -> list[str]:
    """Option names of a config group: the shipped YAML files and those in your config folders."""
    names = {p.stem for folder in (conf_dir(), *extra_dirs) for p in (Path(folder) / group).glob("*.yaml")}
    return sorted(names)


def compose_raw(overrides: Sequence[str], extra_dirs: Sequence[Path] = ()) -> dict[str, Any]:
    """Compose the Hydra config and return it as plain data with interpolations resolved."""
    if extra_dirs and any(o.lstrip("+~").startswith("hydra.searchpath") for o in overrides):
        raise ConfigError("both --config-dir and hydra.searchpath add config folders", where="hydra.searchpath",
                          fix="use --config-dir DIR only (it may be given more than once)")
    try:
        return compose(overrides, extra_dirs)
    except Exception as exc:  # sorted out below; Hydra is imported only on this path
        from hydra.errors import HydraException
        from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

        if isinstance(exc, MissingMandatoryValue):
            key = getattr(exc, "full_key", None) or "?"
            raise ConfigError(
                "a required value is missing: neither the chosen option file nor the command line sets it",
                where=key,
                fix=f"set it on the command line ({key}=...) or in the option file; `slmc explain "
                    f"{key.split('.')[0]}` says what it means",
            ) from None
        # Hydra rejects some override values with plain exceptions: ValueError (`train=null`),
        # TypeError (`device=[[]]`), OSError (an option name looked up as a file is too long).
        errors = (HydraException, OmegaConfBaseException, ValueError, TypeError, OSError)
        if isinstance(exc, errors):
            raise _composition_error(exc, overrides, extra_dirs, errors) from None
        raise


def _composition_error(exc: Exception, overrides: Sequence[str], extra_dirs: Sequence[Path],
                       errors: tuple) -> ConfigError:
    text = str(exc)
    missing = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if missing and missing.group(1) in GROUPS:
        group, option = missing.groups()
        options = available_options(group, extra_dirs)
        near = closest(option, options)
        hint = f"did you mean {' or '.join(f'{group}={o}' for o in near)}? " if near else ""
        return ConfigError(f"there is no option file {group}/{option}.yaml", where=group,
                           fix=f"{hint}choose one of {', '.join(options)}; your own options go in a --config-dir "
                               f"folder ({group}/NAME.yaml)")
    unknown = _unknown_key(exc)
    if unknown is not None:
        near = nearest_key(unknown)
        typed = next((o for o in overrides if o.lstrip("+~").split("=", 1)[0] == unknown), None)
        if near and typed and "=" in typed:
            hint = f"did you mean {near}={typed.split('=', 1)[1]}?"
        else:
            hint = f"did you mean {near}?" if near else "check the key's spelling"
        section = (near or unknown).split(".")[0]
        return ConfigError("not a key of the config", where=unknown,
                           fix=f"{hint} (`slmc explain {section}` lists every key and its meaning)")
    culprit = _culprit(exc, overrides, extra_dirs, errors)
    return ConfigError(_hydra_message(exc, culprit), where=_hydra_where(exc, culprit, overrides),
                       fix="see `slmc compile --help` for the override syntax (key=value, group=option)")


def _unknown_key(exc: Exception) -> str | None:
    """The full key of a 'not in struct' error (an override of a key the config does not have)."""
    for err in (exc, exc.__cause__):
        if err is not None and "not in struct" in str(err):
            key = getattr(err, "full_key", None)
            match = re.search(r"Could not override '([^']+)'", str(exc))
            return match.group(1) if match else (str(key) if key else None)
    return None


def closest(word: str, candidates: Sequence[str], cutoff: float = 0.5) -> list[str]:
    """The candidates nearest to `word` (as difflib scores them), ties and near-ties included:
    `int3` -> int4 and int8, `jetson_orin_nan` -> jetson_orin_nano only."""
    scored = [(difflib.SequenceMatcher(None, word, c).ratio(), c) for c in candidates]
    best = max((score for score, _ in scored), default=0.0)
    return sorted(c for score, c in scored if score >= cutoff and score >= best - 0.1)


def schema_keys(model: type[Section] = SlmcConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, sections and leaves."""
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section):
            keys += schema_keys(field.annotation, f"{prefix}{name}.")
    return keys


def nearest_key(key: str) -> str | None:
    """The schema key a typo most likely meant: the same path with its first unknown part corrected,
    else the key whose last part is the one typed (`lr` -> `train.lr`), else the closest whole path."""
    known = schema_keys()
    parts = key.split(".")
    for i in range(len(parts)):
        prefix = ".".join(parts[:i])
        if ".".join(parts[: i + 1]) in known:
            continue
        siblings = [k.rsplit(".", 1)[-1] for k in known if k.rpartition(".")[0] == prefix]
        for candidate in closest(parts[i], siblings, cutoff=0.6):
            fixed = ".".join([*parts[:i], candidate, *parts[i + 1:]])
            if fixed in known:
                return fixed
        break
    same_leaf = [k for k in known if k.rsplit(".", 1)[-1] == parts[-1]]
    if len(same_leaf) == 1:
        return same_leaf[0]
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
    return near[0] if near else None


def _culprit(exc: Exception, overrides: Sequence[str], extra_dirs: Sequence[Path], errors: tuple) -> str | None:
    """The override that breaks composition: named by Hydra, the only one, or the first that fails alone."""
    named = getattr(exc, "override", None)
    if named is not None or len(overrides) <= 1:
        return named if named is not None else (overrides[0] if overrides else None)
    for override in overrides:  # only on this error path: each try is one compose (~0.1 s)
        try:
            hydra_compose([override], extra_dirs)
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
    return cfg


def _describe(err: dict) -> str:
    if err["type"] == "extra_forbidden":
        near = nearest_key(".".join(str(p) for p in err["loc"]))
        return "unknown key (not part of the schema)" + (f"; did you mean {near}?" if near else "")
    if err["type"] == "missing":
        return "required key is missing"
    got = err.get("input")
    shown = repr(got)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{err['msg']} (got {shown})"


def load_config(overrides: Sequence[str] = (), extra_dirs: Sequence[Path] = ()) -> SlmcConfig:
    """Compose + validate: the only way the rest of slmc gets a config. `extra_dirs` are your config
    folders (`--config-dir`), searched after the shipped conf/."""
    return validate(compose_raw(overrides, extra_dirs))


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
    parts = {"model.name": cfg.model.name, "init.name": cfg.init.name, "train.name": cfg.train.name,
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
