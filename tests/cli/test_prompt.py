"""`koalabot prompt`: the real console program prints the exact prompt bytes, or one-line errors."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from koalabot.cli import main
from koalabot.prompt.templates import TEMPLATES, render, turns_from_data
from tests.fakes.tgi import FakeTGI, count_input_tokens

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


async def koalabot_async(*args: str, env: dict[str, str]) -> tuple[int, bytes, bytes]:
    """The console program run without blocking the loop the fake TGI serves on."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "koalabot",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out, err


async def test_fit_drops_the_oldest_turns_to_the_servers_budget(
    fake_tgi: FakeTGI, tmp_path: Path
) -> None:
    fake_tgi.max_input_tokens, fake_tgi.max_total_tokens = 200, 300
    thread = []
    for i in range(30):
        thread += [
            {"role": "user", "content": f"Question {i}: what about animal number {i}?"},
            {"role": "assistant", "content": f"Animal {i} is a koala, a marsupial."},
        ]
    thread.append({"role": "user", "content": "What is the largest animal on earth?"})
    path = tmp_path / "long.json"
    path.write_text(json.dumps(thread), encoding="utf-8")
    code, out, err = await koalabot_async(
        "prompt",
        str(path),
        "--fit",
        "--max-new-tokens",
        "100",
        env=environment(KOALABOT_TGI_URL=fake_tgi.url),
    )
    assert code == 0, err
    prompt = out.decode()
    assert count_input_tokens(prompt) <= 200
    kept = turns_from_data(thread[-(prompt.count("USER:") * 2 - 1) :])
    assert prompt == render(kept, TEMPLATES["koala"])
    assert prompt.startswith("BEGINNING OF CONVERSATION: USER: Question ")
    assert f"left out the {len(thread) - len(kept)} oldest of 61 messages" in err.decode()
    assert {r.path for r in fake_tgi.requests} == {"/info", "/tokenize"}


async def test_fit_without_a_server_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "thread.json"
    path.write_text(json.dumps(CONVERSATION), encoding="utf-8")
    async with FakeTGI() as gone:
        url = gone.url  # a port that was just free, closed again below
    code, out, err = await koalabot_async(
        "prompt", str(path), "--fit", env=environment(KOALABOT_TGI_URL=url, KOALABOT_RETRIES="0")
    )
    assert code == 2
    assert out == b""
    assert err.decode().startswith("koalabot: error: ")
    assert err.decode().count("\n") == 1


async def test_fit_for_a_named_model_asks_that_model_s_server(tmp_path: Path) -> None:
    """`--model NAME` fits to that KOALABOT_MODELS model's window, as its server counts."""
    thread = [{"role": "user", "content": f"Tell me about koala number {i}."} for i in range(40)]
    path = tmp_path / "long.json"
    path.write_text(json.dumps(thread), encoding="utf-8")
    async with FakeTGI() as koala, FakeTGI(per_character=True) as candidate:
        candidate.max_input_tokens, candidate.max_total_tokens = 400, 500
        models = f"koala={koala.url},candidate={candidate.url}"
        code, out, err = await koalabot_async(
            "prompt",
            str(path),
            "--fit",
            "--model",
            "candidate",
            "--max-new-tokens",
            "100",
            env=environment(KOALABOT_MODELS=models),
        )
        unknown = await koalabot_async(
            "prompt", str(path), "--fit", "--model", "nope", env=environment(KOALABOT_MODELS=models)
        )

    assert code == 0, err
    assert count_input_tokens(out.decode(), per_character=True) <= 400
    assert "left out the" in err.decode() and not koala.requests
    assert {r.path for r in candidate.requests} == {"/info", "/tokenize"}
    assert unknown[0] == 2
    assert unknown[2].decode() == (
        "koalabot: error: --model: no model 'nope' in KOALABOT_MODELS (koala, candidate)\n"
    )
