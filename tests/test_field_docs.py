"""Field descriptions from attribute docstrings: the same as pydantic's `use_attribute_docstrings`."""

from __future__ import annotations

import importlib.util
import sys
import textwrap

from pydantic import BaseModel
from pydantic._internal._docs_extraction import extract_docstrings_from_cls

from slmc import schema
from slmc.field_docs import module_attribute_docs

SECTIONS = [c for c in vars(schema).values()
            if isinstance(c, type) and issubclass(c, schema.Section) and c is not schema.Section]


def test_schema_descriptions_equal_pydantics_extraction():
    assert len(SECTIONS) >= 15
    for cls in SECTIONS:
        got = {name: f.description for name, f in cls.model_fields.items() if f.description is not None}
        assert got == extract_docstrings_from_cls(cls, use_inspect=True), cls.__name__


def test_descriptions_reach_the_json_schema():
    defs = schema.SlmcConfig.model_json_schema()["$defs"]
    for cls in SECTIONS:
        if cls is schema.SlmcConfig or cls.__name__ not in defs:
            continue
        props = defs[cls.__name__]["properties"]
        for name, field in cls.model_fields.items():
            assert props[name].get("description") == field.description, f"{cls.__name__}.{name}"


SOURCE = '''
from pydantic import BaseModel, ConfigDict, Field

class A(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    """not a field doc"""
    x: int = 1
    """Multi-line
       doc, indented."""
    y: int = Field(2, ge=0)
    """doc of a Field()"""
    z: int = 3
    _w = 4
    """after a plain assignment: not a doc"""
    v: str = "v"

    class B(BaseModel):
        model_config = ConfigDict(use_attribute_docstrings=True)

        q: int = 0
        """nested class field"""

    def f(self):
        u: int = 1
        """inside a function: not a field"""
'''


def test_same_rule_as_pydantic_on_odd_sources(tmp_path):
    path = tmp_path / "docs_probe.py"
    path.write_text(textwrap.dedent(SOURCE))
    spec = importlib.util.spec_from_file_location("docs_probe", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_probe"] = module
    try:
        spec.loader.exec_module(module)
        docs = module_attribute_docs("docs_probe")
        for cls in (module.A, module.A.B):
            assert issubclass(cls, BaseModel)
            expected = {n: f.description for n, f in cls.model_fields.items() if f.description is not None}
            assert docs[cls.__qualname__] == expected, cls.__qualname__
        assert docs["A"]["x"] == "Multi-line\ndoc, indented."
    finally:
        del sys.modules["docs_probe"]
