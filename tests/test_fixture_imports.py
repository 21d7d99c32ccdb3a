"""No test module imports another folder's conftest.py: fixtures imported that way are
registered a second time (a session-scoped build then runs twice) and tie one folder's
tests to another's internals. Shared fixtures live in tests/fixtures/ (see tests/conftest.py)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent


def conftest_imports(path: Path) -> list[str]:
    """The conftest modules `path` imports, as written (`.conftest`, `tests.runtime.conftest`, ...)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[-1] == "conftest":
            found.append("." * node.level + node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[-1] == "conftest"]
    return found


def test_conftest_imports_stay_inside_their_folder():
    crossing = {}
    for path in sorted(TESTS.rglob("*.py")):
        foreign = [name for name in conftest_imports(path) if name != ".conftest"]
        if foreign:
            crossing[path.relative_to(TESTS).as_posix()] = foreign
    assert crossing == {}, f"import shared fixtures from tests/fixtures/ instead: {crossing}"


def test_the_check_sees_a_crossing_import(tmp_path):
    sample = tmp_path / "test_x.py"
    sample.write_text("from tests.runtime.conftest import built\nfrom .conftest import count\n")
    assert conftest_imports(sample) == ["tests.runtime.conftest", ".conftest"]
