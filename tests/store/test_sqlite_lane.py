"""SQLite's fast lane: transactions on the event loop that never make it wait.

Another process writing (say `koalabot forget` while the bot runs) holds SQLite's write lock;
the bot's next message must then wait for it without freezing every other chat, and be stored
once the lock is free. The write-ahead log must not grow without bound when the lane never
checkpoints by itself. And the thread tails the repository keeps between answers must give the
prompts a fresh read gives, and be dropped when another process changes the database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from koalabot.engine.engine import Engine
from koalabot.events import ChatMessage, Clicked, ThreadKey
from koalabot.store import inline, repository
from koalabot.store.database import open_database
from koalabot.store.forget import forget_user
from koalabot.store.repository import GenerationRecord, Repository
from tests.engine.test_engine import ThreadView, make_settings
from tests.fakes.tgi import FakeTGI, Fault

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


# --- kept thread tails ----------------------------------------------------------------------


def _said(text: str, user: str, n: int) -> ChatMessage:
    ts = f"1700000000.{n:06d}"
    return ChatMessage(WHERE, user, text, ts, dedupe_keys=(f"slack:msg:C1:{ts}",))


async def test_a_user_forgotten_by_another_process_leaves_the_next_prompt(
    tmp_path: Path, fake_tgi: FakeTGI
) -> None:
    url = f"sqlite:///{tmp_path}/k.db"
    engine = await Engine.open(make_settings(url, fake_tgi))
    try:
        view = ThreadView()
        await engine.handle_message(_said("my phone is 555-0199", "U2", 1), view)
        for n in range(2, 6):
            await engine.handle_message(_said(f"question {n}", "U1", n), view)
        assert "555-0199" in fake_tgi.prompts[-1]  # the thread's tail is kept by now
        # `koalabot forget --user slack:U2`, run while the bot keeps going
        other = await open_database(url)
        try:
            await forget_user(other, "slack", "U2")
        finally:
            await other.close()
        await engine.handle_message(_said("and now?", "U1", 6), view)
        assert "555-0199" not in fake_tgi.prompts[-1]
        assert "question 5" in fake_tgi.prompts[-1]
    finally:
        await engine.close()


async def test_prompts_from_kept_tails_are_the_prompts_read_afresh(
    tmp_path: Path, fake_tgi: FakeTGI
) -> None:
    url = f"sqlite:///{tmp_path}/k.db"
    # a small window, so the thread outgrows it and its oldest turns are dropped (and counted)
    settings = make_settings(url, fake_tgi, max_new_tokens=1700)
    engine = await Engine.open(settings)
    try:
        view = ThreadView()
        for n in range(1, 40):
            fake_tgi.replies.append(f" Answer {n} " + "blah " * (n % 7))
            if n % 9 == 0:
                fake_tgi.fault = Fault("error", after_tokens=1)  # an answer that fails midway
            message = _said(f"question {n} " + "x " * n, "U1", n)
            result = await engine.handle_message(message, view)
            if n % 5 == 0 and result.answer_id:
                clicked = Clicked("C1", result.message_ids[-1])
                await engine.regenerate(result.answer_id, "U1", view, clicked)
            kept = fake_tgi.prompts[-1]
            fresh = await Engine.open(settings)  # nothing kept yet
            try:
                conversation = await fresh.repo.conversation_id(WHERE)
                assert conversation is not None
                page = await fresh.repo.history(conversation, limit=500)
                upto = max(m.id for m in page if m.role == "user")
                prompt, dropped, _ = await fresh._prompt(conversation, upto, None)
            finally:
                await fresh.close()
            if result.status == "ok" and n % 5:  # (a regeneration's prompt came last)
                assert (prompt, dropped) == (kept, result.dropped_turns), n
    finally:
        await engine.close()


async def test_the_lane_stores_exactly_what_sqlalchemy_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lane runs the per-message statements on the driver itself: same rows, same formats
    (timestamps, JSON) as SQLAlchemy's own execution of them."""
    monkeypatch.setattr(repository, "utcnow", lambda: datetime(2026, 11, 27, 8, 0, 1, 5, UTC))
    record = GenerationRecord(
        prompt="BEGINNING OF CONVERSATION: USER: hi GPT:",
        template="koala",
        parameters={"max_new_tokens": 256, "stop": ["</s>", "USER:"], "temperature": 0.7},
        model_id="koala-13b",
        endpoint="http://tgi",
        prompt_tokens=12,
        completion_tokens=3,
        finish_reason="eos_token",
        time_to_first_token=0.25,
        total_time=1.5,
    )
    dumps = []
    for name, lane in (("lane", True), ("sqlalchemy", False)):
        db = await open_database(f"sqlite:///{tmp_path}/{name}.db")
        if not lane:
            assert db.inline is not None
            await db.inline.close()
            db = dataclasses.replace(db, inline=None)
        repo = Repository(db)
        try:
            stored = await repo.add_user_message(WHERE, "U1", "hi", "1.1", ["ev-1", "ev-2"])
            assert stored is not None
            assert await repo.add_user_message(WHERE, "U1", "hi", "1.1", ["ev-2"]) is None
            start = await repo.start_answer(*stored, "1.2", tail=10)
            await repo.finish_answer(start.answer_id, "Hello!", "ok", record, WHERE, ["1.2", "1.3"])
            await repo.add_refs(start.answer_id, WHERE, ["1.4"])
        finally:
            await db.close()
        with sqlite3.connect(tmp_path / f"{name}.db") as raw:
            dumps.append(
                {
                    table: raw.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
                    for table in (
                        "conversations",
                        "messages",
                        "processed_events",
                        "generations",
                        "message_refs",
                    )
                }
            )
    assert dumps[0] == dumps[1]
    assert dumps[0]["generations"][0][4] == json.dumps(record.parameters)
