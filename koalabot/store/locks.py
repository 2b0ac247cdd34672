"""Thread locks across replicas: PostgreSQL advisory locks keyed by the conversation id.

In one process the engine's own asyncio lock orders the answers of a thread; across replicas
sharing one PostgreSQL database, the replica answering a thread holds that conversation's
advisory lock, so two replicas never interleave answers in one thread. SQLite has one writer
process by nature and needs none of this.

Advisory locks belong to a session. Holding each on a pooled connection for the length of an
answer would take one connection per answer in flight, and with the pool used up the lock
holders could not get one for their own queries. One session (``LockSession``) holds them all
instead; waiting is polling with ``pg_try_advisory_lock``, since a blocking wait would stall it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from koalabot.errors import StoreError
from koalabot.store.database import Database

_TRY = text("SELECT pg_try_advisory_lock(:k)")
_UNLOCK = text("SELECT pg_advisory_unlock(:k)")
#: Longest pause between two tries while another replica holds a thread's lock (seconds).
MAX_POLL = 0.25


class LockSession:
    """The one PostgreSQL session that holds this process's thread locks."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._conn: AsyncConnection | None = None
        self._session = 0  # which session the locks taken now belong to
        self._use = asyncio.Lock()  # one statement at a time on the connection

    @contextlib.asynccontextmanager
    async def hold(self, key: int) -> AsyncIterator[None]:
        """Wait for the lock on ``key`` (another replica may be answering there), hold it."""
        delay = 0.01
        while (held := await self.try_lock(key)) is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_POLL)
        try:
            yield
        finally:
            await self.unlock(key, held)

    async def try_lock(self, key: int) -> int | None:
        """Take the lock if it is free: the session it is held by, else None."""
        async with self._use:
            try:
                if self._conn is None:
                    conn = await self._db.engine.connect()
                    self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    self._session += 1
                got = await self._conn.scalar(_TRY, {"k": key})
            except (SQLAlchemyError, OSError) as exc:
                await self._drop()
                raise StoreError() from exc
        return self._session if got else None

    async def unlock(self, key: int, session: int) -> None:
        """Release a lock; nothing to do if its session is gone (the server released it)."""
        async with self._use:
            if self._conn is None or session != self._session:
                return
            try:
                await self._conn.execute(_UNLOCK, {"k": key})
            except (SQLAlchemyError, OSError):
                await self._drop()

    async def close(self) -> None:
        """Give the session back (the server releases every lock it held)."""
        async with self._use:
            await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(SQLAlchemyError, OSError):
                await conn.invalidate()


async def try_lock_on(conn: AsyncConnection, key: int) -> bool:
    """Take ``key``'s lock on a connection of one's own if it is free (always, on SQLite)."""
    if conn.dialect.name != "postgresql":
        return True
    got = await conn.scalar(_TRY, {"k": key})
    await conn.commit()
    return bool(got)


async def unlock_on(conn: AsyncConnection, key: int) -> None:
    """Release what ``try_lock_on`` took."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_UNLOCK, {"k": key})
        await conn.commit()
