"""The renderer: config values become literals, never code."""

import ast
import math
import subprocess

import pytest

from slmc.render import environment, python_literal, shell_quote

HOSTILE = ["a'b", 'tri"""ple', "back\\slash", "new\nline", "{{ 7*7 }}", "{% raw %}", "__import__('os').system('x')"]


@pytest.mark.parametrize("value", HOSTILE + [1, 2.5, None, True, [1, "x"], {"k": "v'"}, (1,)])
def test_python_literal_round_trips(value):
    assert ast.literal_eval(python_literal(value)) == value


def test_non_finite_floats_round_trip():
    assert math.isinf(eval(python_literal(float("inf"))))


@pytest.mark.parametrize("value", HOSTILE)
def test_shell_quote_is_one_word(value, tmp_path):
    script = tmp_path / "s.sh"
    script.write_text(f"printf %s {shell_quote(value)}\n")
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True).stdout
    assert out == value


def test_undefined_names_are_errors():
    from jinja2 import UndefinedError

    with pytest.raises(UndefinedError):
        environment().from_string("{{ missing }}").render()


def test_sandbox_blocks_attribute_escapes():
    from jinja2.exceptions import SecurityError

    with pytest.raises(SecurityError):
        environment().from_string("{{ ''.__class__.__mro__[1].__subclasses__() }}").render()
