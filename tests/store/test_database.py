"""Opening the store: URL mapping, SQLite's self-upgrade and pragmas, PostgreSQL's strictness."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from koalabot.config import load_settings
from koalabot.errors import ConfigError, MigrationError, SchemaBehindError, StoreError
from koalabot.store.database import (
    BUSY_TIMEOUT_ENV,
    Database,
    async_url,
    current_revision,
    head_revision,
    open_database,
    upgrade,
)
from koalabot.store.models import Conversation, Message


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("sqlite:///koalabot.db", "sqlite+aiosqlite:///koalabot.db"),
        ("sqlite:////var/lib/koalabot/k.db", "sqlite+aiosqlite:////var/lib/koalabot/k.db"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("sqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
        ("postgresql://kb:pw@db:5432/koala", "postgresql+asyncpg://kb:pw@db:5432/koala"),
        ("postgres://kb:pw@db/koala", "postgresql+asyncpg://kb:pw@db/koala"),
        (
            "postgresql://kb@db/koala?sslmode=require",
            "postgresql+asyncpg://kb@db/koala?ssl=require",
        ),
        # explicit drivers are the user's choice
        ("postgresql+asyncpg://kb@db/koala", "postgresql+asyncpg://kb@db/koala"),
        ("postgresql+psycopg://kb@db/koala", "postgresql+psycopg://kb@db/koala"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_async_url_picks_the_asyncio_driver(given: str, used: str) -> None:
    assert async_url(given) == used


def test_async_url_keeps_special_characters_in_the_password() -> None:
    assert async_url("postgresql://kb:p%40ss%2Fw@db/k") == "postgresql+asyncpg://kb:p%40ss%2Fw@db/k"


@pytest.mark.parametrize("url", ["", "koalabot.db", "not a url", "mysql://root@db/koala"])
def test_a_bad_url_is_a_config_error_naming_the_setting(url: str) -> None:
    with pytest.raises(ConfigError, match="KOALABOT_DATABASE_URL"):
        async_url(url)


async def _busy_timeout(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int(await conn.scalar(text("PRAGMA busy_timeout")) or 0)


async def test_the_sqlite_busy_timeout_is_a_setting(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BUSY_TIMEOUT_ENV, "0.25")
    assert load_settings(None).sqlite_busy_timeout == 0.25
    db = await open_database(sqlite_url)
    try:
        assert await _busy_timeout(db) == 250
    finally:
        await db.close()
    db = await open_database(sqlite_url, busy_timeout=2)
    try:
        assert await _busy_timeout(db) == 2000, "an explicit value wins over the environment"
    finally:
        await db.close()


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
async def test_a_bad_sqlite_busy_timeout_is_one_clear_line(
    value: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BUSY_TIMEOUT_ENV, value)
    with pytest.raises(ConfigError, match=f"invalid {BUSY_TIMEOUT_ENV}") as caught:
        await open_database(sqlite_url)
    assert "\n" not in str(caught.value)


async def test_sqlite_upgrades_itself_with_wal_and_foreign_keys(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(BUSY_TIMEOUT_ENV)  # the default, not the test suite's short wait
    db = await open_database(sqlite_url)
    try:
        assert db.dialect == "sqlite"
        assert await current_revision(sqlite_url) == head_revision()
        async with db.engine.connect() as conn:
            pragmas = {
                name: await conn.scalar(text(f"PRAGMA {name}"))
                for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            }
        assert pragmas == {
            "journal_mode": "wal",
            "foreign_keys": 1,
            "busy_timeout": 5000,
            "synchronous": 1,
        }
    finally:
        await db.close()


async def _add_message(db: Database) -> int:
    async with db.sessions() as session, session.begin():
        conversation = Conversation(platform="slack", workspace="T1", channel="C1", thread="1.0")
        session.add(conversation)
        await session.flush()
        session.add(Message(conversation_id=conversation.id, role="user", text="hi"))
    return conversation.id


async def test_deleting_a_conversation_deletes_its_messages(db: Database) -> None:
    conversation_id = await _add_message(db)

    async with db.sessions() as session, session.begin():
        conversation = await session.get(Conversation, conversation_id)
        assert conversation is not None
        await session.delete(conversation)

    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 0


async def test_a_message_in_no_conversation_is_refused(db: Database) -> None:
    with pytest.raises(IntegrityError, match=r"(?i)foreign key"):
        async with db.sessions() as session, session.begin():
            session.add(Message(conversation_id=12345, role="user", text="orphan"))


async def test_in_memory_sqlite_keeps_its_schema_and_rows_across_sessions() -> None:
    db = await open_database("sqlite://")
    try:
        await _add_message(db)
        async with db.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Message)) == 1
    finally:
        await db.close()


async def test_reopening_an_upgraded_sqlite_file_keeps_the_data(sqlite_url: str) -> None:
    first = await open_database(sqlite_url)
    await _add_message(first)
    await first.close()

    again = await open_database(sqlite_url)
    try:
        async with again.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Message)) == 1
    finally:
        await again.close()


async def test_postgres_with_an_empty_schema_is_not_upgraded_implicitly(postgres_url: str) -> None:
    with pytest.raises(SchemaBehindError) as raised:
        await open_database(postgres_url)

    message = str(raised.value)
    assert "`koalabot db upgrade`" in message
    assert "(none)" in message
    assert head_revision() in message
    assert await current_revision(postgres_url) is None


async def test_postgres_opens_once_upgraded(postgres_url: str) -> None:
    await upgrade(postgres_url)

    db = await open_database(postgres_url)
    try:
        assert db.dialect == "postgresql"
        await _add_message(db)
    finally:
        await db.close()


async def test_upgrade_false_only_checks_even_on_sqlite(sqlite_url: str) -> None:
    with pytest.raises(SchemaBehindError, match="koalabot db upgrade"):
        await open_database(sqlite_url, upgrade=False)


async def test_a_schema_from_a_newer_koalabot_is_refused(database_url: str) -> None:
    await upgrade(database_url)
    db = await open_database(database_url)
    async with db.engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    await db.close()

    for upgrade_it in (None, True):
        with pytest.raises(MigrationError, match="'9999', which this koalabot does not know"):
            await open_database(database_url, upgrade=upgrade_it)


async def test_an_unreachable_server_is_a_store_error_without_the_password() -> None:
    with pytest.raises(StoreError) as raised:
        await open_database("postgresql://kb:s3cret@127.0.0.1:1/koala")  # nothing on port 1

    assert "could not open the database at postgresql://kb:***@127.0.0.1:1/koala" in str(
        raised.value
    )
    assert "s3cret" not in str(raised.value)


async def test_sqlite_in_a_missing_folder_is_a_store_error_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "no" / "such"

    with pytest.raises(StoreError, match=f"the folder {folder} does not exist"):
        await open_database(f"sqlite:///{folder}/k.db")
