"""The tree reads as the flow, and stays that way: the import rules of DESIGN.md, checked with the
standard library's `ast` over the source files (nothing is imported, so a broken module cannot
hide a rule it breaks).

Each rule is a function of the parsed tree that returns the breaches it finds; the tests at the
bottom run them over the real tree, and over a small tree that breaks each rule on purpose, so a
rule that could never fail is caught too.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 500

SQL = frozenset({"sqlalchemy", "alembic", "asyncpg", "aiosqlite", "apsw", "sqlite3", "psycopg"})
MODEL_CLIENTS = frozenset({"text_generation", "openai", "httpx", "requests"})
PLATFORM_SDKS = frozenset({"slack_bolt", "slack_sdk", "discord"})


@dataclass(frozen=True)
class Source:
    """One Python file: its import name, its path from the root, and what it imports."""

    module: str
    path: str
    lines: int
    imports: frozenset[str]


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[0] == "adapters":
        parts[0] = "koalabot_adapters"
    elif parts[0] == "migrations":
        parts[0] = "koalabot_migrations"
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import that runs (at module level or inside a function), not those under
    ``if TYPE_CHECKING:``, which never run."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking_only(node):
            yield from (n for child in node.orelse for n in _import_nodes_of(child))
            continue
        yield from _import_nodes_of(node)


def _import_nodes_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    else:
        yield from _import_nodes(node)


def _resolve(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    yield from (f"{base}.{alias.name}" for alias in node.names)


def read_tree(root: Path) -> list[Source]:
    """Every .py file under koalabot/, adapters/ and migrations/ of ``root``."""
    sources = []
    for top in ("koalabot", "adapters", "migrations"):
        for path in sorted((root / top).rglob("*.py")):
            text = path.read_text()
            module = _module_name(path, root)
            is_package = path.name == "__init__.py"
            imports = {
                name
                for node in _import_nodes(ast.parse(text))
                for name in _resolve(node, module, is_package)
            }
            rel = path.relative_to(root).as_posix()
            sources.append(Source(module, rel, text.count("\n"), frozenset(imports)))
    return sources


def _top(name: str) -> str:
    return name.split(".")[0]


def _under(source: Source, *prefixes: str) -> bool:
    return any(source.path.startswith(p) for p in prefixes)


def sql_only_in_the_store(sources: list[Source]) -> list[str]:
    return [
        f"{s.path} imports {name}"
        for s in sources
        if not _under(s, "koalabot/store/", "migrations/")
        for name in sorted(s.imports)
        if _top(name) in SQL
    ]


def model_clients_only_in_the_backend(sources: list[Source]) -> list[str]:
    """No model client outside koalabot/backend/; elsewhere in koalabot/ aiohttp only serves
    (``aiohttp.web``). Adapters may use aiohttp to reach their own platform."""
    breaches = []
    for s in sources:
        if _under(s, "koalabot/backend/"):
            continue
        for name in sorted(s.imports):
            if _top(name) in MODEL_CLIENTS:
                breaches.append(f"{s.path} imports {name}")
            elif _under(s, "koalabot/") and _top(name) == "aiohttp" and not _serves(name):
                breaches.append(f"{s.path} imports {name} (only aiohttp.web outside the backend)")
    return breaches


def _serves(name: str) -> bool:
    return name == "aiohttp.web" or name.startswith("aiohttp.web.")


def platform_sdks_only_in_adapters(sources: list[Source]) -> list[str]:
    return [
        f"{s.path} imports {name}"
        for s in sources
        if not _under(s, "adapters/")
        for name in sorted(s.imports)
        if _top(name) in PLATFORM_SDKS
    ]


def core_never_imports_adapters(sources: list[Source]) -> list[str]:
    return [
        f"{s.path} imports {name}"
        for s in sources
        if _under(s, "koalabot/")
        for name in sorted(s.imports)
        if _top(name) == "koalabot_adapters"
    ]


def prompt_is_pure(sources: list[Source]) -> list[str]:
    banned = ("koalabot.store", "koalabot.engine", "koalabot.backend")
    return [
        f"{s.path} imports {name}"
        for s in sources
        if _under(s, "koalabot/prompt/")
        for name in sorted(s.imports)
        if any(name == b or name.startswith(b + ".") for b in banned)
    ]


def no_file_too_long(sources: list[Source]) -> list[str]:
    return [
        f"{s.path} has {s.lines} lines (at most {MAX_LINES})"
        for s in sources
        if _under(s, "koalabot/", "adapters/") and s.lines > MAX_LINES
    ]


def no_import_cycles(sources: list[Source]) -> list[str]:
    """Cycles between modules of koalabot and koalabot_adapters (an import of a name from a
    package counts as importing the package's ``__init__``)."""
    modules = {s.module for s in sources}
    graph = {
        s.module: sorted({_owner(name, modules) for name in s.imports} - {None, s.module})
        for s in sources
    }
    return [" -> ".join(cycle) for cycle in _cycles(graph)]


def _owner(name: str, modules: set[str]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _cycles(graph: dict[str, list[str | None]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, []):
            if nxt is None:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append([*sorted(component), sorted(component)[0]])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


RULES: dict[str, Callable[[list[Source]], list[str]]] = {
    "SQL only in koalabot/store/ and migrations/": sql_only_in_the_store,
    "model clients only in koalabot/backend/": model_clients_only_in_the_backend,
    "platform SDKs only in adapters/": platform_sdks_only_in_adapters,
    "koalabot never imports koalabot_adapters": core_never_imports_adapters,
    "koalabot/prompt/ imports no store, engine or backend": prompt_is_pure,
    "no file over 500 lines in koalabot/ or adapters/": no_file_too_long,
    "no import cycles": no_import_cycles,
}


@pytest.mark.parametrize("rule", list(RULES), ids=list(RULES))
def test_the_tree_keeps_the_rule(rule: str) -> None:
    breaches = RULES[rule](read_tree(ROOT))
    assert not breaches, f"{rule}:\n  " + "\n  ".join(breaches)


def test_the_stages_are_packages() -> None:
    stages = {p.name for p in (ROOT / "koalabot").iterdir() if (p / "__init__.py").exists()}
    expected = {"prompt", "engine", "store", "backend", "export", "review", "cli", "stats"}
    assert expected <= stages


# --- each rule fails when broken -------------------------------------------------------------

BROKEN: dict[str, dict[str, str]] = {
    "SQL only in koalabot/store/ and migrations/": {
        "koalabot/export/rows.py": "import apsw\n",
    },
    "model clients only in koalabot/backend/": {
        "koalabot/engine/answer.py": "from text_generation import AsyncClient\n",
        "koalabot/engine/notices.py": "from aiohttp import ClientSession\n",
    },
    "platform SDKs only in adapters/": {"koalabot/engine/engine.py": "import discord\n"},
    "koalabot never imports koalabot_adapters": {
        "koalabot/cli/run.py": "def f():\n    from koalabot_adapters.slack import app\n",
    },
    "koalabot/prompt/ imports no store, engine or backend": {
        "koalabot/prompt/history.py": "from koalabot.store.repository import Repository\n",
    },
    "no file over 500 lines in koalabot/ or adapters/": {"adapters/big.py": "x = 1\n" * 501},
    "no import cycles": {
        "koalabot/export/run.py": "from koalabot.export import parallel\n",
        "koalabot/export/parallel.py": "def f():\n    from koalabot.export.run import export\n",
    },
}


def _write(root: Path, files: dict[str, str]) -> None:
    base = {
        "koalabot/__init__.py": "",
        "koalabot/export/__init__.py": "",
        "koalabot/store/__init__.py": "import sqlalchemy\n",
        "koalabot/backend/client.py": "import text_generation\nimport aiohttp\n",
        "koalabot/cli/run.py": "from aiohttp import web\n",
        "adapters/__init__.py": "",
        "adapters/slack/app.py": "import slack_bolt\nimport aiohttp\n",
        "migrations/env.py": "from alembic import context\n",
    }
    for rel, text in {**base, **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_tree_that_keeps_every_rule_passes_them(tmp_path: Path) -> None:
    _write(tmp_path, {})
    sources = read_tree(tmp_path)
    assert {rule: check(sources) for rule, check in RULES.items()} == {rule: [] for rule in RULES}


@pytest.mark.parametrize("rule", list(BROKEN), ids=list(BROKEN))
def test_each_rule_fails_when_broken(rule: str, tmp_path: Path) -> None:
    _write(tmp_path, BROKEN[rule])
    sources = read_tree(tmp_path)
    assert RULES[rule](sources), f"{rule} did not notice {sorted(BROKEN[rule])}"
    others = {name: check(sources) for name, check in RULES.items() if name != rule}
    assert others == {name: [] for name in others}


def test_type_checking_imports_never_run_so_they_break_no_rule(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "koalabot/prompt/history.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from koalabot.store.records import Message\n"
            )
        },
    )
    assert prompt_is_pure(read_tree(tmp_path)) == []
