"""End to end against a real inference server: llama-cpp-python's, on a tiny random GGUF.

Marked ``llama_server``: skipped with a reason without llama-cpp-python[server]; required in
CI (KOALABOT_REQUIRE_LLAMA=1). A logging proxy in front of the server keeps what it received and
streamed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text

from koalabot.adapter import RunOptions
from koalabot.engine.engine import Engine
from koalabot.prompt.templates import TEMPLATES, Turn, render
from koalabot.store.database import open_database
from koalabot_adapters.slack.app import create_adapter
from tests.fakes.slack import FakeSlack, Message
from tests.fixtures.llama import LlamaServer, LoggingProxy, require_llama, write_tiny_gguf
from tests.fixtures.slack import slack_settings

pytestmark = pytest.mark.llama_server

HELLO = "Hello!"
SECOND = "What is the largest animal on earth?"


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    require_llama()
    folder = tmp_path_factory.mktemp("llama")
    server = LlamaServer(write_tiny_gguf(folder / "tiny.gguf"))
    server.start(folder / "server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
async def proxy(llama: LlamaServer) -> AsyncIterator[LoggingProxy]:
    proxy = LoggingProxy(llama.url)
    await proxy.start()
    yield proxy
    await proxy.stop()


async def koalabot(args: list[str], stdin: str, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "koalabot",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **env},
    )
    out, _ = await asyncio.wait_for(process.communicate(stdin.encode()), 120)
    return process.returncode or 0, out.decode("utf-8", "replace")


def chat_env(proxy: LoggingProxy, database_url: str) -> dict[str, str]:
    return {
        "KOALABOT_MODEL_URL": proxy.url,
        "KOALABOT_CONTEXT_TOKENS": "512",  # llama-cpp-python does not state its n_ctx
        "KOALABOT_MAX_NEW_TOKENS": "24",
        "KOALABOT_SEED": "3",
        "KOALABOT_DATABASE_URL": database_url,
        "KOALABOT_PSEUDONYM_SECRET": "test-secret",
    }


async def stored(database_url: str, query: str) -> list[Any]:
    db = await open_database(database_url)
    try:
        return await db.run(lambda c: list(c.execute(text(query)).all()))
    finally:
        await db.close()


async def test_chat_two_turns_sends_the_exact_koala_prompt(
    proxy: LoggingProxy, database_url: str
) -> None:
    env = chat_env(proxy, database_url)
    code, out = await koalabot(["db", "upgrade"], "", env)  # PostgreSQL is not upgraded itself
    assert code == 0, out
    code, out = await koalabot(["chat"], f"{HELLO}\n{SECOND}\n/quit\n", env)
    assert code == 0, out

    first, second = proxy.completions()
    answers = [
        row[0]
        for row in await stored(
            database_url, "select text from messages where role = 'assistant' order by id"
        )
    ]
    assert len(answers) == 2
    # What the server received is byte for byte the Koala template (EasyLM's rendering).
    assert first.json()["prompt"] == f"BEGINNING OF CONVERSATION: USER: {HELLO} GPT:"
    turns = [Turn("user", HELLO), Turn("assistant", answers[0]), Turn("user", SECOND)]
    assert second.json()["prompt"] == render(turns, TEMPLATES["koala"])
    # What was stored is what the server streamed.
    assert [a for a in answers] == [first.streamed_text().strip(), second.streamed_text().strip()]
    # The budget counted with the server's own tokenizer: its count of the second prompt.
    counted = [e for e in proxy.exchanges if e.path == "/extras/tokenize" and e.status == 200]
    assert counted
    [[tokens]] = await stored(
        database_url, "select prompt_tokens from generations order by id desc limit 1"
    )
    server_count = await _server_count(proxy, second.json()["prompt"])
    assert tokens == server_count


async def _server_count(proxy: LoggingProxy, prompt: str) -> int:
    url = proxy.upstream + "/extras/tokenize"
    body = {"input": prompt}
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        return len((await response.json())["tokens"])


async def test_odd_bytes_from_the_server_are_stored_shown_and_exported(
    proxy: LoggingProxy, sqlite_url: str, tmp_path: Path
) -> None:
    proxy.corrupt = True  # a lone surrogate escape, raw invalid UTF-8 and a control character
    env = chat_env(proxy, sqlite_url)
    code, out = await koalabot(["chat"], f"{HELLO}\n/good\n/quit\n", env)
    assert code == 0, out
    [[answer]] = await stored(sqlite_url, "select text from messages where role = 'assistant'")
    assert "\ufffd" in answer and "\x01" in answer
    assert "Traceback" not in out

    export = tmp_path / "sft.jsonl"
    code, out = await koalabot(["export", "--format", "sft", "--out", str(export)], "", env)
    assert code == 0, out
    rows = [json.loads(line) for line in export.read_text("utf-8").splitlines()]
    assert rows
    assert any("\ufffd" in json.dumps(row, ensure_ascii=False) for row in rows)


async def test_the_slack_bot_answers_from_the_real_server(
    proxy: LoggingProxy, fake_slack: FakeSlack, sqlite_url: str
) -> None:
    server = SimpleNamespace(url=proxy.url)
    settings = slack_settings(
        fake_slack, server, sqlite_url, tgi_url=None, model_url=[proxy.url],  # type: ignore[arg-type]
        context_tokens=512, max_new_tokens=24, seed=3,
    )  # fmt: skip
    engine = await Engine.open(settings)
    adapter = create_adapter(engine, settings, RunOptions(mode="socket", port=0))
    await adapter.start()
    try:
        root = await fake_slack.user_posts(f"<@{fake_slack.bot_user_id}> {HELLO}")

        def finished() -> Message | None:
            done = [m for m in fake_slack.bot_replies(root.channel, root.ts) if m.buttons]
            return done[0] if done else None

        answer = await fake_slack.wait_for(finished)
        await fake_slack.settle()
    finally:
        await adapter.stop()
        await engine.close()
    [completion] = proxy.completions()
    assert completion.json()["prompt"] == f"BEGINNING OF CONVERSATION: USER: {HELLO} GPT:"
    [[stored_answer]] = await stored(
        sqlite_url, "select text from messages where role = 'assistant'"
    )
    assert stored_answer == completion.streamed_text().strip()
    assert answer.thread_ts == root.ts
