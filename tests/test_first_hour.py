"""Issue 19, item 5: the README's quick start, run as written, twice in a row, in a copy of the
repository: two commands, the first installs and chats with a stand-in that echoes and stops with
the chat (nothing keeps a port; the second run chats with its own stand-in, not the first's)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "*.egg-info", "__pycache__", ".*_cache", "*.db", "*.db-*", "build", "dist"
)


def quick_start() -> list[str]:
    """The shell commands of the README's Quick start section, in order."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL)]


def test_the_quick_start_is_two_commands_install_and_chat_then_the_tests() -> None:
    install_and_chat, tests = quick_start()

    assert "\n" not in install_and_chat and "koalabot chat --demo" in install_and_chat
    assert tests == "python -m pytest -q"


def _newcomer_env() -> dict[str, str]:
    """The environment of someone who has not activated anything: no venv, no koalabot setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOALABOT_", "VIRTUAL_ENV"))}
    venv_bin = str(Path(os.environ.get("VIRTUAL_ENV", "/nonexistent")) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    return env


@pytest.mark.timeout(900)
def test_the_quick_start_works_twice_in_a_row(tmp_path: Path) -> None:
    install_and_chat, _tests = quick_start()
    checkout = tmp_path / "koalabot"
    shutil.copytree(ROOT, checkout, ignore=_NOT_SOURCE)

    for said in ("Hello from the quick start!", "And once more."):
        done = subprocess.run(
            ["bash", "-c", install_and_chat],
            input=f"{said}\n",
            capture_output=True,
            text=True,
            cwd=checkout,
            env=_newcomer_env(),
            timeout=600,
        )

        assert done.returncode == 0, done.stderr[-3000:]
        assert "Traceback" not in done.stderr
        assert "stand-in that echoes" in done.stdout
        assert f"(echo stand-in, not a model) You said: {said}" in done.stdout
