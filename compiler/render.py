"""Render templates into in-memory text: one sandboxed, strict Jinja2 environment.

Templates hold layout only; values are computed in the plan. Config values
enter generated code only through the `py` (Python literal) and `sh`
(shell-quoted) filters, never as code. JSON and YAML are serialised from data
elsewhere, never templated.
"""

from __future__ import annotations

import json
import math
import shlex
from functools import lru_cache
from importlib import resources
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from .errors import SlmcError


def python_literal(value: Any) -> str:
    """A Python expression that evaluates to `value` (plain data only)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return repr(value)
    if isinstance(value, (list, tuple)):
        inner = ", ".join(python_literal(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        items = ", ".join(f"{python_literal(k)}: {python_literal(v)}" for k, v in value.items())
        return "{" + items + "}"
    raise SlmcError(f"cannot place a value of type {type(value).__name__} into generated code")


def python_block(value: dict, indent: int = 4) -> str:
    """A dict as a readable multi-line Python literal (one key per line)."""
    pad = " " * indent
    lines = ["{"]
    for key, item in value.items():
        lines.append(f"{pad}{python_literal(key)}: {python_literal(item)},")
    lines.append("}")
    return "\n".join(lines)


def shell_quote(value: Any) -> str:
    """A shell word that expands to exactly `value`."""
    return shlex.quote(str(value))


def _template_source(name: str) -> str:
    try:
        return resources.files("slmc.templates").joinpath(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SlmcError(f"template {name!r} is not shipped with slmc") from None


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.loader = None
    env.filters["py"] = python_literal
    env.filters["pyblock"] = python_block
    env.filters["sh"] = shell_quote
    env.filters["json"] = lambda v: json.dumps(v, sort_keys=True)
    return env


def render_template(name: str, context: dict[str, Any]) -> str:
    """Render `templates/<name>` with `context`; undefined names are errors."""
    template = environment().from_string(_template_source(name))
    return template.render(**context)
