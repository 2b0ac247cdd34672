"""Values kept with the database (the `settings` table): today, the export's pseudonym secret.

The secret lives with the data it protects rather than in a file beside one machine's config, so
every export of a database — from any machine, SQLite or PostgreSQL — gives a user the same
pseudonym. Trade-off: whoever can read the database can read the secret too; pseudonyms guard
exported files, not the database (which holds the raw ids anyway). KOALABOT_PSEUDONYM_SECRET
still overrides it, for secrets kept elsewhere.
"""

from __future__ import annotations

import secrets

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from koalabot.store.database import Database
from koalabot.store.models import StoredSetting, utcnow

PSEUDONYM_SECRET = "pseudonym_secret"


async def get_setting(db: Database, key: str) -> str | None:
    """The value kept under ``key``, or None."""

    def work(conn: Connection) -> str | None:
        return conn.scalar(select(StoredSetting.value).where(StoredSetting.key == key))

    return await db.run(work)


async def setting_or_create(db: Database, key: str, value: str) -> tuple[str, bool]:
    """The value kept under ``key``, storing ``value`` first if there is none; True if stored
    now. Two processes racing get the same answer: the first insert wins, the other reads it."""

    def work(conn: Connection) -> tuple[str, bool]:
        dialect = postgresql if db.dialect == "postgresql" else sqlite
        insert = dialect.insert(StoredSetting).values(key=key, value=value, created_at=utcnow())
        created = conn.execute(insert.on_conflict_do_nothing(index_elements=["key"])).rowcount
        kept = conn.scalar(select(StoredSetting.value).where(StoredSetting.key == key))
        assert kept is not None
        return kept, created == 1

    return await db.run(work)


async def pseudonym_secret(db: Database) -> tuple[str, bool]:
    """The database's pseudonym secret, made (256 random bits) on first use; True if new."""
    return await setting_or_create(db, PSEUDONYM_SECRET, secrets.token_hex(32))
