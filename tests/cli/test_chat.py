"""`koalabot chat` as a person or a script uses it: the real console entry in a subprocess."""

from __future__ import annotations

import asyncio
import os
import pty
import sys
from pathlib import Path

from tests.fakes.tgi import FakeTGI


async def run_chat(tmp_path: Path, tgi_url: str, stdin: str, *extra: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "KOALABOT_TGI_URL": tgi_url,
        "KOALABOT_DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}",
        "KOALABOT_RETRIES": "1",
        "KOALABOT_RETRY_BASE_DELAY": "0.01",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "koalabot",
        "chat",
        "--user",
        "ada",
        *extra,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_piped_lines_each_wait_for_their_answer(tmp_path: Path, fake_tgi: FakeTGI) -> None:
    fake_tgi.token_delay = 0.01
    fake_tgi.replies.extend([" Hi! How can I help you?", " The blue whale."])
    code, out, err = await run_chat(
        tmp_path,
        fake_tgi.url,
        "Hello!\n/good\nWhat is the largest animal on earth?\n/bad\n",
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "Hi! How can I help you?"
    assert "[👍 recorded]" in lines
    assert "The blue whale." in lines
    assert lines[-1] == "[👎 recorded]"
    # the second prompt contains the first exchange: each line waited for its answer
    assert fake_tgi.prompts[1] == (
        "BEGINNING OF CONVERSATION: USER: Hello! GPT:Hi! How can I help you?</s>"
        "USER: What is the largest animal on earth? GPT:"
    )
    assert err == ""


async def test_memory_survives_a_restart_and_new_starts_fresh(
    tmp_path: Path, fake_tgi: FakeTGI
) -> None:
    await run_chat(tmp_path, fake_tgi.url, "My name is Ada.\n")
    code, out, _ = await run_chat(tmp_path, fake_tgi.url, "/history\nWhat is my name?\n")
    assert code == 0
    assert "you: My name is Ada." in out
    assert "USER: My name is Ada. GPT:" in fake_tgi.prompts[-1]
    await run_chat(tmp_path, fake_tgi.url, "/new\nHello again\n")
    assert fake_tgi.prompts[-1] == "BEGINNING OF CONVERSATION: USER: Hello again GPT:"


async def test_retry_gives_a_second_answer_to_vote_on(tmp_path: Path, fake_tgi: FakeTGI) -> None:
    fake_tgi.replies.extend([" Koalas sleep a lot.", " Koalas sleep up to 20 hours a day."])
    code, out, _ = await run_chat(tmp_path, fake_tgi.url, "Tell me a koala fact\n/retry\n/good\n")
    assert code == 0
    assert "Koalas sleep a lot." in out
    assert "Koalas sleep up to 20 hours a day." in out
    assert fake_tgi.prompts[0] == fake_tgi.prompts[1]


async def test_server_down_prints_one_clear_line_then_goes_on(
    tmp_path: Path, fake_tgi: FakeTGI
) -> None:
    url = fake_tgi.url
    await fake_tgi.stop()
    code, out, err = await run_chat(tmp_path, url, "Are you there?\n")
    assert code == 0
    notice = [line for line in out.splitlines() if line.strip()]
    assert len(notice) == 1
    assert url in notice[0] and "koalabot chat --demo" in notice[0]
    assert err == ""
    await fake_tgi.start()  # the server comes up; the next message is answered
    fake_tgi.replies.append(" Yes, I am here.")
    code, out, _ = await run_chat(tmp_path, url, "And now?\n")
    assert "Yes, I am here." in out
    # the unanswered message was kept and is part of the conversation
    assert "USER: Are you there? USER: And now? GPT:" in fake_tgi.prompts[-1]


async def test_bad_setting_is_one_line_not_a_traceback(tmp_path: Path, fake_tgi: FakeTGI) -> None:
    code, _out, err = await run_chat(tmp_path, fake_tgi.url, "hi\n", "--top-p", "1.0")
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]
    assert "KOALABOT_TOP_P" in err and "Traceback" not in err


async def test_interactive_terminal_shows_a_prompt_and_streams(
    tmp_path: Path, fake_tgi: FakeTGI
) -> None:
    fake_tgi.token_delay = 0.01
    fake_tgi.replies.append(" Hello from Koala.")
    main, child = pty.openpty()
    env = {
        **os.environ,
        "KOALABOT_TGI_URL": fake_tgi.url,
        "KOALABOT_DATABASE_URL": f"sqlite:///{tmp_path / 'tty.db'}",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "koalabot",
        "chat",
        stdin=child,
        stdout=child,
        stderr=child,
        cwd=tmp_path,
        env=env,
    )
    os.close(child)
    loop = asyncio.get_running_loop()
    seen = b""

    async def read_until(marker: bytes) -> None:
        nonlocal seen
        while marker not in seen:
            seen += await asyncio.wait_for(loop.run_in_executor(None, os.read, main, 4096), 30)

    await read_until(b"you> ")
    os.write(main, b"Hi there\n")
    await read_until(b"Hello from Koala.")
    await read_until(b"you> ")
    os.write(main, b"/quit\n")
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    os.close(main)
    assert b"/good" in seen  # the welcome line tells the commands
