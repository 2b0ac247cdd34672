"""Discord's error boundary (koalabot_adapters/boundary.py): one failed event is one log line
without text and a notice to the person, and the bot goes on answering. The failure is real: the
store's table is renamed away under the running bot (SQLite), so every query on it fails."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from koalabot.errors import KoalabotError, StoreError
from tests.fakes.discord import FakeDiscord, FakeMessage
from tests.fixtures.discord import DiscordBot

SECRET = "my locker code is 7141"


@contextlib.contextmanager
def table_away(database: Path, table: str) -> Iterator[None]:
    """The table is gone while the block runs (as if a bad migration or a restore were under
    way), and back afterwards."""
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        conn.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
        yield
    finally:
        conn.execute(f"ALTER TABLE {table}_away RENAME TO {table}")
        conn.close()


async def finished_answers(fake: FakeDiscord, channel_id: int, count: int) -> list[FakeMessage]:
    def done() -> list[FakeMessage]:
        found = [m for m in fake.bot_messages(channel_id) if m.components]
        return found if len(found) >= count else []

    return await fake.wait_for(done)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # renames a SQLite table
async def test_a_store_failure_in_one_dm_is_one_line_in_the_log_and_a_notice(
    discord_bot: DiscordBot, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake = discord_bot.discord
    bob = fake.add_user("bob")
    dm = fake.dm_channel(bob)
    for ours in ("koalabot", "koalabot_adapters"):  # discord.py's own DEBUG log echoes frames
        caplog.set_level(logging.DEBUG, logger=ours)

    with table_away(Path(make_url(database_url).database or ""), "conversations"):
        await fake.dm(bob, SECRET)
        notice = await fake.wait_for(lambda: fake.bot_messages(dm.id))
        assert await discord_bot.adapter.drain(10)

    assert notice[0].content in (StoreError.user_message, KoalabotError.user_message)
    assert notice[0].components == []  # nothing to vote on
    logged = [r for r in caplog.records if r.name.startswith(("koalabot", "discord.client"))]
    failures = [r for r in logged if r.levelno >= logging.WARNING]
    assert [r.name for r in failures] == ["koalabot_adapters.boundary"]
    assert failures[0].exc_info is None  # no traceback (its text can quote the message)
    assert not any("7141" in r.getMessage() for r in logged)

    discord_bot.tgi.replies.append("Noted.")
    await fake.dm(bob, "Are you back?")
    (answer,) = await finished_answers(fake, dm.id, 1)
    assert answer.content == "Noted."
