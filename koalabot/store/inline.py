"""SQLite's fast lane: short transactions run right on the event loop, the slow parts off it.

Each aiosqlite statement is a round trip to its worker thread: about 1 ms a transaction on a
small machine, where SQLite itself takes tens of microseconds. So a SQLite file also gets a
synchronous engine whose transactions run on the event loop. Nothing slow happens there: its
connection never waits for a lock (busy timeout 0; the caller reruns the work on the async
engine, which waits in its thread) and never checkpoints (moving the write-ahead log into the
database file fsyncs, tens of milliseconds; InlineLane has the async engine do it instead).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The fast lane's own connection settings, on top of the usual SQLite ones.
LANE_PRAGMAS = ("PRAGMA busy_timeout=0", "PRAGMA wal_autocheckpoint=0")
#: Transactions between two checkpoints (SQLite's own default is every 1,000 log pages; a
#: message writes a few pages in about four transactions).
CHECKPOINT_EVERY = 256
#: Log pages (4 KiB each) past which a checkpoint makes writers wait until it is done.
MAX_LOG_PAGES = 4_000


class LaneStatement:
    """A statement of the per-message path, compiled by SQLAlchemy once, run on the lane's
    driver connection.

    SQLAlchemy's execution of one statement costs ten times what SQLite takes to run it on a
    small machine; the hot path runs a handful per message. SQLAlchemy still writes the SQL and
    converts every value (its own bind processors); only the execution is done here.
    """

    def __init__(self, statement: Any, dialect: Any, keys: Sequence[str] | None = None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=keys)
        self.sql: str = compiled.string
        names = list(compiled.positiontup or ())
        if keys is not None and sorted(names) != sorted(keys):
            raise ValueError(f"{self.sql!r} takes {names}, not {list(keys)}")
        self._binds = [
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in names
        ]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        """The positional values for ``params``, converted as SQLAlchemy would."""
        return [
            convert(params[name]) if convert is not None else params[name]
            for name, convert in self._binds
        ]


class LaneBusy(Exception):
    """Another connection holds a lock the fast lane would have to wait for."""


class InlineLane:
    """Runs transactions on the event loop; checkpoints the log now and then on ``checkpointer``."""

    def __init__(self, engine: Engine, checkpointer: AsyncEngine) -> None:
        self.engine = engine
        self._checkpointer = checkpointer
        self._since_checkpoint = 0
        self._checkpoint: asyncio.Task[None] | None = None
        # One connection for the lane's life: transactions never overlap on the event loop,
        # and a pool checkout would cost more than most of them.
        self._conn: Connection | None = None

    def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one transaction; LaneBusy (rolled back) if it would have to wait."""
        if self._conn is None or self._conn.closed:
            self._conn = self.engine.connect()
        conn = self._conn
        try:
            with conn.begin():
                result = work(conn)
        except OperationalError as exc:
            if conn.in_transaction():  # a failed COMMIT may leave it open, holding a lock
                conn.rollback()
            if _busy(exc):
                raise LaneBusy() from exc
            raise
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT_EVERY and self._checkpoint is None:
            self._since_checkpoint = 0
            self._checkpoint = asyncio.get_running_loop().create_task(self._move_log())
        return result

    def data_version(self) -> int:
        """SQLite's count of commits by other connections, as the lane's connection sees it."""
        assert self._conn is not None, "only inside run()"
        # straight to the driver: one pragma, where SQLAlchemy's execution would cost 10x more
        return int(self._driver().execute("PRAGMA data_version").fetchone()[0])

    def execute(self, statement: LaneStatement, params: Mapping[str, Any]) -> Any:
        """Run one statement in the transaction ``run`` holds open; the driver's cursor.
        Errors are SQLAlchemy's, as if SQLAlchemy had run it."""
        args = statement.args(params)
        try:
            return self._driver().execute(statement.sql, args)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(statement.sql, args, exc, sqlite3.Error) from exc

    def execute_many(self, statement: LaneStatement, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run one statement for each of ``rows`` in the transaction ``run`` holds open."""
        args = [statement.args(row) for row in rows]
        try:
            self._driver().executemany(statement.sql, args)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(statement.sql, args, exc, sqlite3.Error) from exc

    def _driver(self) -> Any:
        assert self._conn is not None, "only inside run()"
        return self._conn.connection.driver_connection

    def owns(self, conn: Connection) -> bool:
        """Whether ``conn`` is the lane's own connection (work may run elsewhere, see
        Database.run)."""
        return conn is self._conn

    async def _move_log(self) -> None:
        try:
            async with self._checkpointer.connect() as conn:
                # PASSIVE: copy what no reader still needs, wait for no one. The log starts over
                # once a checkpoint caught up with it, which steady writing may never let happen:
                # past MAX_LOG_PAGES, TRUNCATE holds writers off (they wait in the async engine's
                # thread, see Database.run) until it has caught up, and empties the file.
                result = await conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
                row: Any = result.one()  # (busy, log pages, pages checkpointed)
                pages = row[1]
                if pages >= MAX_LOG_PAGES:
                    await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        except (SQLAlchemyError, OSError):
            log.warning("could not checkpoint the SQLite log", exc_info=True)
        finally:
            self._checkpoint = None

    async def close(self) -> None:
        """Let a running checkpoint finish, then close the lane's connection."""
        if self._checkpoint is not None:
            await asyncio.wait({self._checkpoint})
        if self._conn is not None:
            self._conn.close()
        self.engine.dispose()


def _busy(exc: OperationalError) -> bool:
    code = getattr(exc.orig, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc.orig)


__all__ = ["CHECKPOINT_EVERY", "InlineLane", "LaneBusy", "LaneStatement"]
