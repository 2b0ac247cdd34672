"""The compiled build (setup.py, ``KOALABOT_COMPILE=1``): CI builds it and runs the export's
tests against it with ``KOALABOT_EXPECT_COMPILED=1``, which these tests check is really so."""

from __future__ import annotations

import ast
import importlib
import os
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

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
    assert "koalabot.export" in names
    for name in names:
        assert (ROOT / (name.replace(".", "/") + ".py")).is_file(), name


@pytest.mark.skipif(not EXPECT_COMPILED, reason="only for the compiled build (CI sets it)")
def test_the_compiled_build_is_what_the_tests_import() -> None:
    for name in compiled_modules():
        module = importlib.import_module(name)
        assert module.__file__ is not None
        assert module.__file__.endswith(tuple(EXTENSION_SUFFIXES)), module.__file__
