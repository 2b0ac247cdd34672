"""Forget reaches the running bot's caches: after `koalabot forget` in another process, nothing
of the forgotten text reaches anyone's prompt (real store, SQLite and PostgreSQL; the fake TGI
over a socket records every prompt it was sent)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from koalabot.engine.engine import Engine
from koalabot.events import ThreadKey
from koalabot.prompt.budget import CachedCounter, Limits
from koalabot.prompt.history import HistoryPrompter
from koalabot.prompt.templates import TEMPLATES
from koalabot.store.database import head_revision, open_database, upgrade
from koalabot.store.forget import forget_user
from koalabot.store.repository import Repository
from tests.engine.test_engine import ThreadView, make_settings, said
from tests.fakes.tgi import FakeTGI

ROOT = Path(__file__).resolve().parents[2]
ALICE_ROOM = ThreadKey("slack", "T1", "CALICE", "1700000000.000001")
BOB_ROOM = ThreadKey("slack", "T1", "CBOB", "1700000000.000002")
SECRET = "my locker code is 4417"
SAME_LENGTH = "what is a good pasta?!"
assert len(SECRET) == len(SAME_LENGTH)


def forget_in_another_process(database_url: str, user: str) -> None:
    """`koalabot forget --user ...`, run as an operator would, beside the running bot."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "koalabot", "forget", "--user", user],
        env={**env, "KOALABOT_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "deleted 1 user message, 1 answer" in done.stdout


async def test_forgotten_words_never_reach_the_next_persons_prompt(
    migrated_database_url: str, fake_tgi: FakeTGI
) -> None:
    engine = await Engine.open(make_settings(migrated_database_url, fake_tgi))
    try:
        fake_tgi.replies.append(" Noted.")
        alice = await engine.handle_message(said(SECRET, ALICE_ROOM, "UALICE"), ThreadView())
        assert alice.status == "ok" and SECRET in fake_tgi.prompts[-1]

        forget_in_another_process(migrated_database_url, "slack:UALICE")

        fake_tgi.replies.append(" Carbonara.")
        bob = await engine.handle_message(said(SAME_LENGTH, BOB_ROOM, "UBOB"), ThreadView())
    finally:
        await engine.close()

    assert bob.status == "ok"
    assert fake_tgi.prompts[-1] == f"BEGINNING OF CONVERSATION: USER: {SAME_LENGTH} GPT:"


class WordCounter:
    """A tokenizer that counts words (and one BOS)."""

    async def count(self, text: str) -> int:
        return len(text.split()) + 1


def ids_that_come_back(sqlite_url: str) -> None:
    """A SQLite store whose tables are as 0004 made them (no AUTOINCREMENT), with the columns
    later migrations add, labelled current."""
    asyncio.run(upgrade(sqlite_url, "0004"))
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        conn.execute("ALTER TABLE messages ADD COLUMN model VARCHAR(255)")
        conn.execute("ALTER TABLE messages ADD COLUMN side VARCHAR(1)")
        conn.execute("ALTER TABLE conversations ADD COLUMN parent VARCHAR(64)")
        conn.execute("UPDATE alembic_version SET version_num = ?", (head_revision(),))


async def test_the_prompt_cache_holds_even_where_ids_come_back(sqlite_url: str) -> None:
    """Where a forgotten message's id is given to the next message (a store whose ids come
    back), the turn remembered under that id is not used for it."""
    await asyncio.to_thread(ids_that_come_back, sqlite_url)
    db = await open_database(sqlite_url)
    try:
        repo = Repository(db)
        history = HistoryPrompter(repo, CachedCounter(WordCounter()), TEMPLATES["koala"])
        limits = Limits(max_input_tokens=4000, max_total_tokens=4512)
        stored = await repo.add_user_message(ALICE_ROOM, "UALICE", SECRET, "1.1", ["slack:a"])
        assert stored is not None
        await history.build(stored[0], stored[1], limits, 512)

        await forget_user(db, "slack", "UALICE")
        again = await repo.add_user_message(BOB_ROOM, "UBOB", SAME_LENGTH, "2.1", ["slack:b"])
        assert again is not None and again[1] == stored[1]  # the same id, given out again
        built = await history.build(again[0], again[1], limits, 512)
    finally:
        await db.close()

    assert built.prompt == f"BEGINNING OF CONVERSATION: USER: {SAME_LENGTH} GPT:"
