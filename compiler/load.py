"""Load: Hydra compose -> plain data -> typed, frozen `SlmcConfig`.

Every way a description can be wrong at this level (unknown group option,
unknown key, wrong type, missing mandatory value) becomes one `ConfigError`
that names the config path and, for a typo, the nearest key or option; none
escapes as a traceback.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Sequence

from .compose import compose, conf_dir
from .errors import ConfigError
from .schema import SlmcConfig

GROUPS = ("device", "model", "init", "train", "compress", "runtime", "data")


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
        shadowed = sorted(str(p.relative_to(conf_dir())) for p in conf_dir().rglob("*.yaml")
                          if (folder / p.relative_to(conf_dir())).is_file())
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
            from .compose_errors import composition_error

            raise composition_error(exc, overrides, extra_dirs, errors) from None
        raise


def validate(raw: dict[str, Any]) -> SlmcConfig:
    """Check plain data against the typed schema; every problem is listed with its path."""
    from pydantic import ValidationError

    from .runs import resolve_run_paths

    resolve_run_paths(raw)  # a run folder in init.path / init.run stands for its final checkpoint
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
        from .compose_errors import nearest_key

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
