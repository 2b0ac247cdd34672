"""The compiled build (setup.py, ``KOALABOT_COMPILE=1``): CI builds it and runs the tests marked
``compiled_build`` against it with ``KOALABOT_EXPECT_COMPILED=1``, which these tests check is
really so."""

from __future__ import annotations

import ast
import importlib
import os
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

pytestmark = pytest.mark.compiled_build

ROOT = Path(__file__).resolve().parent.parent
EXPECT_COMPILED = os.environ.get("KOALABOT_EXPECT_COMPILED") == "1"


def compiled_modules() -> list[str]:
    """The module names setup.py compiles (its COMPILED list, read without running setup())."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "COMPILED" for t in targets):
                assert node.value is not None
                paths: list[str] = ast.literal_eval(node.value)
                return [p.removesuffix(".py").replace("/", ".") for p in paths]
    raise AssertionError("setup.py has no COMPILED list")


def test_every_module_setup_compiles_exists() -> None:
    names = compiled_modules()
    assert "koalabot.export.run" in names
    for name in names:
        assert (ROOT / (name.replace(".", "/") + ".py")).is_file(), name


@pytest.mark.skipif(not EXPECT_COMPILED, reason="only for the compiled build (CI sets it)")
def test_the_compiled_build_is_what_the_tests_import() -> None:
    for name in compiled_modules():
        module = importlib.import_module(name)
        assert module.__file__ is not None
        assert module.__file__.endswith(tuple(EXTENSION_SUFFIXES)), module.__file__


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports by name (``from a import b`` counts as ``a`` and ``a.b``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _marked_compiled_build(path: Path) -> bool:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            return "compiled_build" in ast.unparse(node.value)
    return False


def test_every_test_of_a_compiled_module_runs_on_the_compiled_build() -> None:
    compiled = set(compiled_modules())
    unmarked = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "tests").rglob("test_*.py"))
        if _imported_modules(path) & compiled and not _marked_compiled_build(path)
    ]
    assert not unmarked, (
        "these test files import a module setup.py compiles, so CI should run them on the "
        "compiled build too: add `pytestmark = pytest.mark.compiled_build` to "
        + ", ".join(unmarked)
    )
