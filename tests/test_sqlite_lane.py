"""SQLite's fast lane: transactions on the event loop that never make it wait.

Another process writing (say `koalabot forget` while the bot runs) holds SQLite's write lock;
the bot's next message must then wait for it without freezing every other chat, and be stored
once the lock is free. And the write-ahead log must not grow without bound when the lane never
checkpoints by itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from koalabot.events import ThreadKey
from koalabot.store import inline
from koalabot.store.database import open_database
from koalabot.store.repository import Repository

WHERE = ThreadKey("slack", "T1", "C1", "100.1")


async def test_a_write_while_another_process_writes_waits_off_the_event_loop(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/k.db"
    db = await open_database(url)
    repo = Repository(db)
    try:
        # another "process": its own connection holding the write lock for 0.5 s
        other = sqlite3.connect(tmp_path / "k.db", check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.5, other.commit)
        release.start()
        ticks = 0

        async def other_chats() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(other_chats())
        loop = asyncio.get_running_loop()
        started = loop.time()
        stored = await repo.add_user_message(WHERE, "U1", "hello", "1.1", ["ev-1"])
        waited = loop.time() - started
        ticker.cancel()
        release.join()
        other.close()

        assert stored is not None, "the message is stored once the other writer is done"
        assert waited >= 0.4, "it waited for the lock rather than failing"
        assert ticks >= 10, "the event loop kept running while it waited"
        page = await repo.history(stored[0])
        assert [m.text for m in page] == ["hello"]
    finally:
        await db.close()


async def test_the_write_ahead_log_is_checkpointed_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inline, "CHECKPOINT_EVERY", 20)
    monkeypatch.setattr(inline, "MAX_LOG_PAGES", 200)
    url = f"sqlite:///{tmp_path}/k.db"
    db = await open_database(url)
    repo = Repository(db)
    wal = tmp_path / "k.db-wal"
    text = "x" * 20_000  # about five pages a message
    try:
        for i in range(400):
            await repo.add_user_message(WHERE, "U1", text, f"1.{i}", [f"ev-{i}"])
            await asyncio.sleep(0.001)  # a checkpoint runs in a thread meanwhile
        # 400 messages of five pages make a log of 8 MB without checkpoints; with them it is
        # emptied whenever it passes 200 pages (800 KiB) by the time a checkpoint runs
        assert wal.stat().st_size < 3_000_000
    finally:
        await db.close()
    # nothing was lost on the way
    reopened = await open_database(url)
    try:
        repo = Repository(reopened)
        conversation = await repo.conversation_id(WHERE)
        assert conversation is not None
        assert len(await repo.history(conversation, limit=1000)) == 400
    finally:
        await reopened.close()
