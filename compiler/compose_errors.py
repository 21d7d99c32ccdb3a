"""Why a composition failed, in a person's words: the config path, and for a typo the nearest key or option.

Hydra's own advice for an unknown key ("To append to your config use +key=...")
leads to a second error, since the schema has no such key; slmc suggests what
the schema does have (`train.max_step` -> `train.max_steps`, `compress=int3` ->
int4 or int8).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Sequence

from .compose import hydra_compose
from .errors import ConfigError
from .load import GROUPS, available_options
from .schema import Section, SlmcConfig


def composition_error(exc: Exception, overrides: Sequence[str], extra_dirs: Sequence[Path],
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
