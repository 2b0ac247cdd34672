"""`koalabot prompt`: the real console program prints the exact prompt bytes, or one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from koalabot.cli import main

CONVERSATION = [
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi! How can I help you?"},
    {"role": "user", "content": "What is the largest animal on earth?"},
]
# reference/tgi-and-koala.md §3.1 and §3.2, byte for byte.
EASYLM = (
    b"BEGINNING OF CONVERSATION: USER: Hello! GPT:Hi! How can I help you?</s>"
    b"USER: What is the largest animal on earth? GPT:"
)
FASTCHAT = (
    b"BEGINNING OF CONVERSATION: USER: Hello! GPT: Hi! How can I help you?</s>"
    b"USER: What is the largest animal on earth? GPT:"
)


def environment(**extra: str) -> dict[str, str]:
    """The caller's environment without koalabot settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOALABOT_")}
    return {**env, **extra}


def koalabot(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "koalabot", *args],
        input=stdin,
        capture_output=True,
        env=env or environment(),
        timeout=60,
        check=False,
    )


@pytest.fixture
def conversation_file(tmp_path: Path) -> Path:
    path = tmp_path / "thread.json"
    path.write_text(json.dumps(CONVERSATION), encoding="utf-8")
    return path


def test_prints_the_easylm_prompt_without_a_trailing_newline(conversation_file: Path) -> None:
    done = koalabot("prompt", str(conversation_file))
    assert done.returncode == 0, done.stderr
    assert done.stdout == EASYLM
    assert done.stderr == b""


def test_reads_stdin_and_uses_the_template_from_the_environment() -> None:
    done = koalabot(
        "prompt",
        "-",
        stdin=json.dumps(CONVERSATION).encode(),
        env=environment(KOALABOT_TEMPLATE="koala-fastchat"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == FASTCHAT


def test_bad_input_is_one_line_naming_the_problem_and_exit_status_2(tmp_path: Path) -> None:
    path = tmp_path / "system.json"
    path.write_text('[{"role": "system", "content": "Be brief."}]', encoding="utf-8")
    done = koalabot("prompt", str(path))
    assert done.returncode == 2
    assert done.stdout == b""
    assert done.stderr.decode() == (
        f"koalabot: error: {path}: item 0 has role 'system'; expected 'user' or 'assistant'\n"
    )


def test_template_option_wins_and_unicode_passes_through_untouched(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = tmp_path / "unicode.json"
    path.write_text(json.dumps([{"role": "user", "content": "Grüß dich 👋 — 你好"}]), "utf-8")
    assert main(["prompt", str(path), "--template", "koala-fastchat"]) == 0
    out = capsysbinary.readouterr().out
    assert out == "BEGINNING OF CONVERSATION: USER: Grüß dich 👋 — 你好 GPT:".encode()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "is not valid JSON: Expecting value (line 1, column 1)"),
        (b"[{]", "is not valid JSON: Expecting property name enclosed in double quotes"),
        (b"\xff[]", "is not UTF-8 text"),
        (b'{"role": "user", "content": "hi"}', "expected a JSON list of turns, got an object"),
        (b"[]", "the conversation is empty"),
        (b'[{"role": "user", "content": ["hi"]}]', "item 0 has a list as content"),
        (
            b'[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]',
            "the conversation must end with a user turn",
        ),
    ],
)
def test_bad_files_are_named_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, problem: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    assert main(["prompt", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"koalabot: error: {path}")
    assert problem in captured.err
    assert captured.err.count("\n") == 1


def test_missing_file_and_unknown_template(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], conversation_file: Path
) -> None:
    assert main(["prompt", str(tmp_path / "nope.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["prompt", str(conversation_file), "--template", "alpaca"]) == 2
    assert "unknown template 'alpaca'" in capsys.readouterr().err
