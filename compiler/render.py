"""Render templates into in-memory text: one sandboxed, strict Jinja2 environment.

Templates hold layout only; values are computed in the plan. Config values
enter generated code only through the `py` (Python literal) and `sh`
(shell-quoted) filters, never as code; free text in Markdown goes through `md`. JSON and YAML are serialised from data
elsewhere, never templated.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import unicodedata
from functools import lru_cache
from importlib import resources
from typing import Any

from jinja2 import StrictUndefined, Undefined
from jinja2.sandbox import SandboxedEnvironment

from .errors import SlmcError


def _defined(value: Any) -> Any:
    """A missing template value fails here with Jinja's own UndefinedError naming it."""
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises on any use
    return value


def python_literal(value: Any) -> str:
    """A Python expression that evaluates to `value` (plain data only)."""
    value = _defined(value)
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


_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]<>|])")


def markdown_text(value: Any) -> str:
    """`value` as inline Markdown text that stays where it is placed.

    Line breaks and other control characters become spaces, so a value cannot start a
    code fence, heading, list or HTML block; backslash, backtick, '*', brackets, angle
    brackets and '|' are backslash-escaped, so it cannot open a code span, link, tag or
    table cell. Underscores are left alone: inside words CommonMark ignores them.
    """
    value = _defined(value)
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in str(value))
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


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
    env.filters["md"] = markdown_text
    env.filters["json"] = lambda v: json.dumps(_defined(v), sort_keys=True)
    return env


class ChatTemplateError(SlmcError):
    """A chat template refused a conversation (its raise_exception) or failed to render."""


@lru_cache(maxsize=8)
def chat_template(source: str):
    """A chat template (a checkpoint's or the catalogue's), compiled as transformers compiles one:
    immutable sandbox, trim_blocks, lstrip_blocks, loopcontrols and raise_exception, so it renders
    the text the checkpoint's tokenizer expects. Only data examples are rendered with it."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


def render_chat(source: str, **context: Any) -> str:
    """`source` rendered with `context`; ChatTemplateError (with jinja's message) when it fails."""
    from jinja2 import TemplateError

    try:
        return chat_template(source).render(**context)
    except TemplateError as exc:
        raise ChatTemplateError(str(exc)) from None


@lru_cache(maxsize=None)
def _compiled(name: str):
    """Templates are package files that do not change while slmc runs: compile each once."""
    return environment().from_string(_template_source(name))


def render_template(name: str, context: dict[str, Any]) -> str:
    """Render `templates/<name>` with `context`; undefined names are errors."""
    return _compiled(name).render(**context)
