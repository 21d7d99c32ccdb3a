"""Attribute docstrings of a module's classes, read with one parse of its source.

The schema documents every field with a docstring under it. pydantic's
`use_attribute_docstrings` reads them per class, and on Python < 3.13 it finds
each class by walking frames and re-tokenizing its source: ~20 ms for the
schema's classes, paid by every cold `slmc check`. This reads the module once
and applies pydantic's own rule (`pydantic._internal._docs_extraction`): a
string statement right after an annotated assignment documents that name.
tests/test_field_docs.py compares the result with pydantic's extraction.
"""

from __future__ import annotations

import ast
import inspect
import sys
from functools import lru_cache


@lru_cache(maxsize=None)
def module_attribute_docs(module: str) -> dict[str, dict[str, str]]:
    """{class __qualname__: {attribute: cleaned docstring}} for the module-level (and nested) classes
    of an imported module; classes defined inside functions are not looked into."""
    try:
        source = inspect.getsource(sys.modules[module])
    except (KeyError, OSError, TypeError):  # no source to read (as pydantic: no descriptions)
        return {}
    found: dict[str, dict[str, str]] = {}
    _classes(ast.parse(source).body, "", found)
    return found


def _classes(body: list[ast.stmt], prefix: str, found: dict[str, dict[str, str]]) -> None:
    for node in body:
        if isinstance(node, ast.ClassDef):
            name = prefix + node.name
            found[name] = _attribute_docs(node)
            _classes(node.body, name + ".", found)


def _attribute_docs(cls: ast.ClassDef) -> dict[str, str]:
    docs: dict[str, str] = {}
    target, previous = None, None
    for stmt in cls.body:
        if isinstance(stmt, ast.AnnAssign):
            if isinstance(stmt.target, ast.Name):
                target = stmt.target.id
        elif (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
              and isinstance(stmt.value.value, str) and isinstance(previous, ast.AnnAssign)):
            if target:
                docs[target] = inspect.cleandoc(stmt.value.value)
            target = None
        previous = stmt
    return docs
