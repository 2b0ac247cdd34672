"""koalabot.engine.turns: one answer at a time in a thread, and threads never wait for each
other. Through the Engine on a real SQLite store and the fake TGI, which streams slowly enough
here for the answers to overlap if nothing kept them apart. Across replicas (PostgreSQL) the
order is in tests/store/test_replicas.py; one thread's messages in order in test_engine.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from koalabot.config import load_settings
from koalabot.engine.engine import Engine
from koalabot.events import ChatMessage, ThreadKey
from tests.fakes.tgi import FakeTGI

ONE = ThreadKey("slack", "T1", "C1", "1.0")
OTHER = ThreadKey("slack", "T1", "C1", "2.0")


@dataclass
class Logged:
    """A thread's sink that writes what it shows, in order, into one log for every thread."""

    name: str
    log: list[str]
    max_chars: int = 3000
    edit_interval: float = 0.01

    async def post(self, text: str) -> str:
        self.log.append(f"{self.name} starts")
        return f"{self.name}-{len(self.log)}"

    async def edit(self, message_id: str, text: str) -> None:
        return None

    async def finish(self, message_id: str, text: str, answer_id: int) -> None:
        self.log.append(f"{self.name} done")

    async def notice(self, text: str) -> None:
        self.log.append(f"{self.name} notice")

    async def thinking(self, on: bool) -> None:
        return None


@pytest.fixture
async def engine(sqlite_url: str, fake_tgi: FakeTGI) -> AsyncIterator[Engine]:
    settings = load_settings(None, database_url=sqlite_url, tgi_url=fake_tgi.url, notice="")
    async with await Engine.open(settings) as opened:
        yield opened


async def test_a_thread_answers_one_message_at_a_time_while_another_thread_goes_on(
    engine: Engine, fake_tgi: FakeTGI
) -> None:
    fake_tgi.token_delay = 0.05
    fake_tgi.reply = lambda prompt: " " + " ".join(["word"] * 20)  # about a second each
    log: list[str] = []

    async def ask(where: ThreadKey, name: str, ts: str) -> None:
        result = await engine.handle_message(ChatMessage(where, "U1", name, ts), Logged(name, log))
        assert result.status == "ok"

    first = asyncio.create_task(ask(ONE, "one-a", "1.1"))
    await asyncio.sleep(0)
    await asyncio.gather(first, ask(ONE, "one-b", "1.2"), ask(OTHER, "other", "2.1"))

    # The thread's second answer starts once its first is done...
    assert log.index("one-b starts") > log.index("one-a done")
    # ...while the other thread's answer did not wait for either.
    assert log.index("other starts") < log.index("one-a done")
