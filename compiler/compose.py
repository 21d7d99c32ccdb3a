"""The shipped conf tree composed without Hydra, for the cases where Hydra only merges YAML.

`slmc check` should answer in well under half a second, and importing Hydra plus
one `compose` cost ~170 ms of that on a 2-core machine. For slmc's own tree the
composition is plain: each group's option file (after the `/_base/...@_here_`
files its defaults list names) merged under the group's key, then the primary
config's own keys, then `group=option` choices and `dotted.key=value` changes of
existing scalar keys, with the value parsed as Hydra's grammar parses it.

`compose_simple` returns what `hydra.compose` + `OmegaConf.to_container(resolve=True)`
returns, or None for anything outside that subset (other override syntax,
interpolations, `???`, list values, unknown keys, Hydra header directives,
files it cannot read). The caller then composes with Hydra, which stays the
source of truth: for sweeps, for Hydra's flags and for every error message.
tests/test_compose.py compares both paths on many override sets.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Sequence

import yaml

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_OPTION = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HERE = re.compile(r"/([A-Za-z0-9_]+(?:/[A-Za-z0-9_]+)*)@_here_")
_HEADER = re.compile(r"^\s*#\s*@", re.M)  # Hydra's `# @package ...` directives
# Override values: the part of Hydra's override grammar (hydra/grammar/OverrideLexer.g4)
# whose meaning is a single token or a plain unquoted string.
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?(?:(?:(?:0|[1-9][0-9]*)?\.[0-9]+|(?:0|[1-9][0-9]*)\.)(?:[eE][-+]?[0-9]+)?"
                    r"|(?:0|[1-9][0-9]*)[eE][-+]?[0-9]+)")
_WORD = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*")
_KEYWORDS = {"true", "false", "null", "inf", "nan"}  # Hydra reads these in any letter case
SELF = "_self_"


class _Unsupported(Exception):
    """Outside the subset this module composes: Hydra composes it."""


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """OmegaConf's YAML loader (omegaconf._utils.get_yaml_loader) without importing OmegaConf:
    YAML 1.2 style floats (`1e-3`), no timestamps, duplicate keys refused."""

    def construct_mapping(self, node, deep=False):
        keys = set()
        for key_node, _ in node.value:
            if key_node.tag == yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG:
                if key_node.value in keys:
                    raise _Unsupported(f"duplicate key {key_node.value}")
                keys.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        """^(?:
     [-+]?[0-9]+(?:_[0-9]+)*\\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9]+(?:_[0-9]+)*(?:[eE][-+]?[0-9]+)
    |\\.[0-9]+(?:_[0-9]+)*(?:[eE][-+][0-9]+)?
    |[-+]?[0-9]+(?:_[0-9]+)*(?::[0-5]?[0-9])+\\.[0-9_]*
    |[-+]?\\.(?:inf|Inf|INF)
    |\\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()
}


def compose_simple(conf: Path, overrides: Sequence[str]) -> dict[str, Any] | None:
    """The composed config as plain data, or None when Hydra must compose it."""
    try:
        return _compose(Path(conf), list(overrides))
    except (_Unsupported, OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def _compose(conf: Path, overrides: list[str]) -> dict[str, Any]:
    primary = read_yaml(conf / "config.yaml")
    order, choices = _primary_defaults(primary.pop("defaults", None))
    changes: dict[str, Any] = {}
    for text in overrides:
        key, value = parse_override(text)
        if key in choices and key not in changes:
            plain = isinstance(value, str) and _OPTION.fullmatch(value)
            if not plain or not (conf / key / f"{value}.yaml").is_file():
                raise _Unsupported(text)  # Hydra names the available options
            choices[key] = value
            changes[key] = None  # seen: a second override of the same key goes to Hydra
        elif key in changes or key == "hydra" or "." not in key and (conf / key).is_dir():
            raise _Unsupported(text)
        else:
            changes[key] = value
    primary.pop("hydra", None)  # Hydra's own settings; compose() leaves them out
    cfg: dict[str, Any] = {}
    for item in order:
        _merge(cfg, primary if item == SELF else {item: _group_node(conf, item, choices[item])})
    _check_plain(cfg)
    for key, value in changes.items():
        if key not in choices:
            _set(cfg, key, value)
    return cfg


def _primary_defaults(defaults: Any) -> tuple[list[str], dict[str, str]]:
    """config.yaml's defaults list: the merge order (group names and `_self_`) and each group's option."""
    if not isinstance(defaults, list) or SELF not in defaults:
        raise _Unsupported("defaults")
    order, choices = [], {}
    for entry in defaults:
        if entry == SELF:
            order.append(SELF)
            continue
        if not isinstance(entry, dict) or len(entry) != 1:
            raise _Unsupported(repr(entry))
        (group, option), = entry.items()
        if isinstance(group, str) and group.startswith("override hydra/"):
            continue  # configures Hydra's logging, not the config
        plain = isinstance(group, str) and isinstance(option, str) and _OPTION.fullmatch(group) \
            and _OPTION.fullmatch(option) and group != SELF
        if not plain or group in choices:
            raise _Unsupported(repr(entry))
        order.append(group)
        choices[group] = option
    return order, choices


def _group_node(conf: Path, group: str, option: str) -> dict[str, Any]:
    """One option file, after the `/path@_here_` files its own defaults list names."""
    data = read_yaml(conf / group / f"{option}.yaml")
    defaults = data.pop("defaults", None)
    if defaults is None:
        return data
    if not isinstance(defaults, list) or SELF not in defaults:
        raise _Unsupported(f"{group}/{option} defaults")
    node: dict[str, Any] = {}
    for entry in defaults:
        if entry == SELF:
            _merge(node, data)
            continue
        match = _HERE.fullmatch(entry) if isinstance(entry, str) else None
        if match is None:
            raise _Unsupported(repr(entry))
        base = read_yaml(conf / f"{match.group(1)}.yaml")
        if "defaults" in base:
            raise _Unsupported(f"{match.group(1)} defaults")
        _merge(node, base)
    return node


def read_yaml(path: Path) -> dict[str, Any]:
    """A config file's mapping as OmegaConf would load it (values checked once composed)."""
    text = path.read_text(encoding="utf-8")
    if _HEADER.search(text):
        raise _Unsupported(f"{path}: header directive")
    data = yaml.load(text, Loader=_Loader)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise _Unsupported(f"{path}: not a mapping")
    return data


def _check_plain(value: Any) -> None:
    """Only what OmegaConf keeps unchanged: str keys, scalars, lists, dicts; no `???`, no `${...}`.

    Checked on the composed result: a `???` merged over a value (OmegaConf keeps the value)
    stays visible there, and one that a later file replaced is gone in both."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Unsupported(f"key {key!r}")
            _check_plain(item)
    elif isinstance(value, list):
        for item in value:
            _check_plain(item)
    elif isinstance(value, str):
        if value == "???" or "${" in value or "\\" in value:
            raise _Unsupported(value)
    elif value is not None and type(value) not in (bool, int, float):
        raise _Unsupported(type(value).__name__)


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` with the value as Hydra's grammar reads it; _Unsupported for anything else."""
    key, eq, raw = text.partition("=")
    if not eq or not _KEY.fullmatch(key):
        raise _Unsupported(text)
    return key, parse_value(raw)


def parse_value(raw: str) -> Any:
    """A plain override value: null, true/false, an int, a float or an unquoted string."""
    if raw == "null":
        return None
    if raw in ("true", "false"):
        return raw == "true"
    if _INT.fullmatch(raw):
        return int(raw)
    if _FLOAT.fullmatch(raw):
        return float(raw)
    if _WORD.fullmatch(raw) and raw.lower() not in _KEYWORDS:
        return raw
    raise _Unsupported(raw)


def _merge(dest: dict[str, Any], src: dict[str, Any]) -> None:
    """OmegaConf's merge of untyped configs: dicts merge key by key, anything else replaces."""
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dest.get(key), dict):
            _merge(dest[key], value)
        else:
            dest[key] = copy.deepcopy(value)


def _set(cfg: dict[str, Any], key: str, value: Any) -> None:
    """Change an existing scalar (Hydra's struct mode refuses new keys; those errors are Hydra's to word)."""
    *parents, last = key.split(".")
    node: Any = cfg
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or last not in node or isinstance(node[last], (dict, list)):
        raise _Unsupported(key)
    node[last] = value
