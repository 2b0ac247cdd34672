"""Adapters are found through the `koalabot.adapters` entry points (koalabot/adapter.py): ours,
a third-party package's, and a clear one-line error for a name nobody installed."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from koalabot.adapter import installed, load_factory, load_module
from koalabot.errors import ConfigError

PLUGIN = """
class MatrixAdapter:
    name = "matrix"

    def __init__(self, engine, settings, options):
        self.started = False

    async def start(self):
        self.started = True

    async def stop(self):
        self.started = False

    def sink_for(self, where):
        raise NotImplementedError


def create_adapter(engine, settings, options):
    return MatrixAdapter(engine, settings, options)
"""


@pytest.fixture
def matrix_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A separate package, `koalabot-matrix`, installed the way pip lays one out: its module and
    a dist-info whose entry_points.txt registers it in koalabot's group."""
    (tmp_path / "koalabot_matrix.py").write_text(PLUGIN)
    info = tmp_path / "koalabot_matrix-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: koalabot-matrix\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[koalabot.adapters]\nmatrix = koalabot_matrix\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("koalabot_matrix", None)


def test_our_platforms_are_installed_as_entry_points() -> None:
    assert {"slack", "discord", "terminal"} <= set(installed())
    for name in ("slack", "discord"):
        assert callable(load_factory(name))
    assert hasattr(load_module("terminal"), "TerminalChat")  # what `koalabot chat` runs


def test_a_third_party_package_adds_a_platform(matrix_installed: None) -> None:
    assert "matrix" in installed()
    adapter = load_factory("matrix")(None, None, None)  # type: ignore[arg-type]
    asyncio.run(adapter.start())
    assert adapter.name == "matrix" and adapter.started  # type: ignore[attr-defined]


def test_an_unknown_platform_is_one_line_naming_the_installed_ones() -> None:
    with pytest.raises(ConfigError) as raised:
        load_factory("matrix")
    assert str(raised.value) == (
        "unknown platform 'matrix': the installed ones are discord, slack, terminal"
    )


def test_the_terminal_cannot_be_run_as_a_server() -> None:
    with pytest.raises(ConfigError, match="cannot be run by `koalabot run`"):
        load_factory("terminal")


async def test_koalabot_run_with_an_unknown_platform_says_so_in_one_line() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "koalabot",
        "run",
        "--platform",
        "slack,matrix",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    assert process.returncode != 0
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0]
    assert "unknown platform 'matrix'" in lines[0]
    assert "discord, slack, terminal" in lines[0]
