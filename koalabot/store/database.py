"""Opening the database and moving its schema: SQLite upgrades itself, PostgreSQL never implicitly.

Alembic runs on the async engine's own connection (``conn.run_sync``), so every function here
works inside a running event loop, and an in-memory SQLite database is migrated in place.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import (
    ArgumentError,
    InvalidRequestError,
    NoSuchModuleError,
    SQLAlchemyError,
)
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool

from koalabot.errors import ConfigError, MigrationError, SchemaBehindError, StoreError
from koalabot.files import private_file
from koalabot.store.inline import LANE_PRAGMAS, InlineLane, LaneBusy

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

#: Where Alembic finds env.py and versions/: the installed package, from any working directory.
SCRIPT_LOCATION = "koalabot_migrations:"
#: The newest revision in koalabot_migrations (a test holds the two together). A database already
#: at it opens without loading Alembic, which would add about half a second to every command.
SCHEMA_HEAD = "0008_thread_parents"

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
_BACKENDS = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql"}

# Every SQLite connection: concurrent readers with one writer, wait for the writer instead of
# failing at once (busy timeout, below), enforce the ON DELETE CASCADE the schema relies on.
_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
)
#: Seconds a SQLite write waits for another process's write lock (a long `koalabot forget`, a
#: backup) before it fails, unless KOALABOT_SQLITE_BUSY_TIMEOUT says otherwise. Long enough to
#: outlast an ordinary transaction; the test suite sets it low so as not to sit out the wait.
DEFAULT_BUSY_TIMEOUT = 5.0
BUSY_TIMEOUT_ENV = "KOALABOT_SQLITE_BUSY_TIMEOUT"

# PostgreSQL: each thread being answered may hold one connection (advisory lock) for the length
# of a generation, so leave headroom above the steady pool.
_PG_POOL = {"pool_size": 10, "max_overflow": 20, "pool_pre_ping": True, "pool_recycle": 1800}
_PG_CONNECT_TIMEOUT = 10.0


T = TypeVar("T")


@dataclass(frozen=True)
class Database:
    """An open database: the engine, a session factory, and which kind of SQL it speaks."""

    url: str = field(repr=False)  # may hold a password; the engine's repr masks it
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    dialect: str  # "sqlite" | "postgresql"
    #: A SQLite file's fast lane (see ``run``); None for PostgreSQL and in-memory SQLite.
    inline: InlineLane | None = None

    async def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one transaction and return what it returns.

        PostgreSQL runs it on the async engine (``run_sync``); a SQLite file on its fast lane
        (koalabot/store/inline.py), or on the async engine when another process is writing.
        ``work`` may run twice, so it touches nothing but the connection.
        """
        if self.inline is not None:
            try:
                return self.inline.run(work)
            except LaneBusy:
                pass  # wait for the other writer off the event loop
        async with self.engine.begin() as conn:
            return await conn.run_sync(work)

    async def close(self) -> None:
        """Close every pooled connection."""
        if self.inline is not None:
            await self.inline.close()
        await self.engine.dispose()


# --- URLs ------------------------------------------------------------------------------------


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(
            f"invalid KOALABOT_DATABASE_URL {url!r}: {exc} "
            "(expected sqlite:///path/to/file.db or postgresql://user@host/dbname)"
        ) from None
    backend = parsed.drivername.partition("+")[0]
    if backend not in _BACKENDS:
        raise ConfigError(
            f"invalid KOALABOT_DATABASE_URL {safe_url(url)!r}: unsupported database {backend!r} "
            "(koalabot supports sqlite:// and postgresql://)"
        )
    return parsed


def async_url(url: str) -> str:
    """The URL with an asyncio driver: plain sqlite:// → aiosqlite, postgresql:// → asyncpg."""
    parsed = _parse(url)
    if "+" in parsed.drivername:
        return url
    backend = _BACKENDS[parsed.drivername]
    # Swap the scheme as text: re-rendering the URL would quote `:memory:` and the like.
    mapped = f"{_ASYNC_DRIVERS[backend]}://{url.partition('://')[2]}"
    if backend == "postgresql" and "sslmode" in parsed.query:
        # libpq spells it sslmode; asyncpg takes the same values as ssl.
        ssl = make_url(mapped).update_query_dict({"ssl": parsed.query["sslmode"]})
        return ssl.difference_update_query(["sslmode"]).render_as_string(hide_password=False)
    return mapped


def safe_url(url: str) -> str:
    """The URL fit for logs and messages: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparsable URL>"


def sqlite_busy_timeout() -> float:
    """The SQLite busy timeout in seconds: KOALABOT_SQLITE_BUSY_TIMEOUT, else the default."""
    raw = os.environ.get(BUSY_TIMEOUT_ENV, "").strip()
    try:
        seconds = float(raw) if raw else DEFAULT_BUSY_TIMEOUT
    except ValueError:
        seconds = -1.0
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise ConfigError(f"invalid {BUSY_TIMEOUT_ENV} {raw!r}: expected seconds, 0 or more")
    return seconds


def _pragmas(timeout: float | None) -> tuple[str, ...]:
    """Every SQLite connection's pragmas, with the busy timeout (None: the setting)."""
    seconds = sqlite_busy_timeout() if timeout is None else timeout
    return (*_SQLITE_PRAGMAS, f"PRAGMA busy_timeout={round(seconds * 1000)}")


def _on_connect(engine: Any, pragmas: tuple[str, ...]) -> None:
    """Run ``pragmas`` on every new DBAPI connection of a (synchronous) engine."""

    def run(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()

    event.listen(engine, "connect", run)


def _is_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _create_engine(url: str, busy: float | None = None) -> AsyncEngine:
    parsed = make_url(async_url(url))
    options: dict[str, Any] = {"hide_parameters": True}  # no message text in errors and logs
    if _is_memory(parsed):
        options["poolclass"] = StaticPool
    elif parsed.get_backend_name() == "sqlite":
        folder = Path(str(parsed.database)).parent
        if not folder.is_dir():
            raise StoreError(
                f"cannot create the SQLite database {parsed.database}: the folder {folder} "
                "does not exist (create it, or point KOALABOT_DATABASE_URL elsewhere)"
            )
        private_file(Path(str(parsed.database)))  # 0600, and so its -wal and -shm files
    elif parsed.get_backend_name() == "postgresql":
        options.update(_PG_POOL)
        if parsed.get_driver_name() == "asyncpg":
            options["connect_args"] = {"timeout": _PG_CONNECT_TIMEOUT}
    try:
        engine = create_async_engine(parsed, **options)
    except (ArgumentError, InvalidRequestError, NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"invalid KOALABOT_DATABASE_URL {safe_url(url)!r}: {exc}") from None
    if engine.dialect.name == "sqlite":
        _on_connect(engine.sync_engine, _pragmas(busy))
    return engine


def _inline_lane(url: str, engine: AsyncEngine, busy: float | None) -> InlineLane | None:
    """A SQLite file's fast lane: a synchronous engine on the same file."""
    parsed = make_url(async_url(url))
    if parsed.get_backend_name() != "sqlite" or _is_memory(parsed):
        return None
    sync = create_engine(
        parsed.set(drivername="sqlite+pysqlite"), pool_size=1, hide_parameters=True
    )
    _on_connect(sync, _pragmas(busy) + LANE_PRAGMAS)  # the lane's own busy timeout (0) wins
    return InlineLane(sync, engine)


def missing_sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names when it does not exist (None for anything else): read-only
    commands refuse it rather than create an empty database."""
    parsed = make_url(async_url(url))
    if parsed.get_backend_name() != "sqlite" or _is_memory(parsed):
        return None
    path = Path(str(parsed.database))
    return None if path.exists() else path


def _sqlite_file_missing(url: str) -> bool:
    parsed = make_url(async_url(url))
    if parsed.get_backend_name() != "sqlite" or _is_memory(parsed):
        return False
    return not Path(str(parsed.database)).exists()


# --- Alembic ---------------------------------------------------------------------------------


def _alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config())


def head_revision() -> str:
    """The newest revision this koalabot ships."""
    head = _scripts().get_current_head()
    assert head is not None, "koalabot_migrations has no revisions"
    return head


@cache
def known_revisions() -> frozenset[str]:
    """Every revision this koalabot ships (a database at another one was moved by a newer one)."""
    return frozenset(script.revision for script in _scripts().walk_revisions())


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


async def _at_head(engine: AsyncEngine, url: str) -> bool:
    """Whether the schema is at `SCHEMA_HEAD`, read without Alembic (False if it cannot tell)."""
    conn = await _connect(engine, url)
    try:
        found = await conn.scalar(text("SELECT version_num FROM alembic_version"))
    except SQLAlchemyError:
        return False  # no version table yet: the full check says what to do
    finally:
        await conn.close()
    return bool(found == SCHEMA_HEAD)


def _check_known(current: str | None, url: str) -> None:
    if current is not None and current not in known_revisions():
        raise MigrationError(
            f"the database at {safe_url(url)} is at schema revision {current!r}, which this "
            f"koalabot does not know (its newest is {head_revision()}); is a newer koalabot "
            "using it? Upgrade koalabot."
        )


def _reason(exc: BaseException) -> str:
    """The driver's own words, first line only (SQLAlchemy appends SQL and a link)."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__


async def _connect(engine: AsyncEngine, url: str) -> AsyncConnection:
    try:
        return await engine.connect()
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"could not open the database at {safe_url(url)}: {_reason(exc)}") from exc


async def _migrate(engine: AsyncEngine, url: str, action: str, revision: str) -> None:
    """Run `alembic upgrade|downgrade revision` on one connection of this engine."""

    from alembic import command
    from alembic.util import CommandError

    def run(connection: Connection) -> bool:
        before = _current(connection)
        _check_known(before, url)
        config = _alembic_config(connection)
        if action == "upgrade":
            command.upgrade(config, revision)
        else:
            command.downgrade(config, revision)
        return _current(connection) != before

    conn = await _connect(engine, url)
    sqlite = engine.dialect.name == "sqlite"
    try:
        if sqlite:
            # A batch migration recreates tables; with foreign keys on, dropping the old table
            # would cascade-delete the rows that point at it (SQLite's documented ALTER recipe).
            await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            await conn.commit()
        async with conn.begin():
            moved = await conn.run_sync(run)
        if sqlite and moved:
            broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
            if broken:
                raise MigrationError(f"the migration left {len(broken)} dangling foreign keys")
    except CommandError as exc:
        raise MigrationError(f"cannot {action} to {revision!r}: {exc}") from None
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"{action} of {safe_url(url)} failed: {_reason(exc)}") from exc
    finally:
        if sqlite:
            try:
                await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                await conn.commit()
            except SQLAlchemyError:
                await conn.invalidate()  # never pool a connection without foreign keys
        await conn.close()


async def _current_revision(engine: AsyncEngine, url: str) -> str | None:
    conn = await _connect(engine, url)
    try:
        return await conn.run_sync(_current)
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"could not read the schema revision: {_reason(exc)}") from exc
    finally:
        await conn.close()


async def _require_head(engine: AsyncEngine, url: str) -> None:
    current = await _current_revision(engine, url)
    _check_known(current, url)
    head = head_revision()
    if current != head:
        raise SchemaBehindError(
            f"the database schema at {safe_url(url)} is at revision {current or '(none)'} but "
            f"this koalabot needs {head}; run `koalabot db upgrade` (same database URL) first"
        )


async def _with_engine_migrate(url: str, action: str, revision: str) -> None:
    engine = _create_engine(url)
    try:
        await _migrate(engine, url, action, revision)
    finally:
        await engine.dispose()


async def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the schema to `revision` (default: the newest); each step is logged."""
    await _with_engine_migrate(url, "upgrade", revision)


async def downgrade(url: str, revision: str) -> None:
    """Downgrade the schema to `revision` ("base" drops every koalabot table and its data)."""
    await _with_engine_migrate(url, "downgrade", revision)


async def current_revision(url: str) -> str | None:
    """The schema revision the database is at, None for an empty (or missing SQLite) database."""
    if _sqlite_file_missing(url):
        return None
    engine = _create_engine(url)
    try:
        return await _current_revision(engine, url)
    finally:
        await engine.dispose()


async def open_database(
    url: str, *, upgrade: bool | None = None, busy_timeout: float | None = None
) -> Database:
    """Open the store at `url`, with its schema at head or a clear error.

    `upgrade=None` upgrades SQLite (the embedded kind) and only checks PostgreSQL, whose schema
    an operator moves with `koalabot db upgrade`; True or False force either behaviour.
    `busy_timeout` (seconds, SQLite) defaults to KOALABOT_SQLITE_BUSY_TIMEOUT or 5.
    """
    engine = _create_engine(url, busy_timeout)
    dialect = engine.dialect.name
    should_upgrade = dialect == "sqlite" if upgrade is None else upgrade
    try:
        if not await _at_head(engine, url):
            if should_upgrade:
                await _migrate(engine, url, "upgrade", "head")
            else:
                await _require_head(engine, url)
    except BaseException:
        await engine.dispose()
        raise
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    inline = _inline_lane(url, engine, busy_timeout)
    return Database(url=url, engine=engine, sessions=sessions, dialect=dialect, inline=inline)
