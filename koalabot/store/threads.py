"""The export's reads: conversations that have votes, whole and in id order, as plain records
(`Thread` of `ThreadMessage`), with opted-out users' votes moved aside.

Two ways in. `stream_threads` streams from any database through SQLAlchemy, one conversation in
memory at a time. `sqlite_threads` describes the same query on a SQLite file as plain data that
worker processes can copy; each opens a `ThreadReader` and reads ranges of conversation ids
through APSW. The reader is opaque to the export, which sees only threads: no SQL leaves
this module.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

import apsw
from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    bindparam,
    case,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from koalabot.errors import StoreError
from koalabot.store.ballots import SQLITE_BALLOTS, conversation_filters, message_votes
from koalabot.store.database import Database, sqlite_busy_timeout
from koalabot.store.errors import store_error
from koalabot.store.judgements import judged_conversations
from koalabot.store.models import Conversation, Feedback, Generation, Message, OptOut, Review

#: Rows fetched per round trip while streaming (a server-side cursor on PostgreSQL).
BATCH = 5000


# --- plain data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThreadScope:
    """Which conversations to read: the filters SQL applies before any row reaches Python."""

    platform: str | None = None
    channel: str | None = None
    #: Conversations started at or after this cannot hold an answer before it.
    until: datetime | None = None
    #: Also read each answer's exact prompt string (large; only `--string-prompt` needs it).
    with_prompts: bool = False


class ThreadMessage(NamedTuple):
    """One message of a thread, with the votes on it and how it was generated.

    A named tuple rather than a dataclass: an export reads millions, and a row from the driver
    becomes one without a Python-level constructor call.
    """

    conversation_id: int
    platform: str
    id: int
    role: str
    author: str | None
    text: str
    status: str
    parent_id: int | None
    #: As the driver gave it (SQLite: text, stored as UTC); ``as_utc`` makes it a datetime.
    created_at: datetime | str
    #: Votes that count: those of users who did not opt out (answers only; 0 on user messages).
    up: int = 0
    down: int = 0
    model: str | None = None
    template: str | None = None
    prompt: str | None = None
    #: Votes left out because the voter opted out.
    ignored: int = 0
    #: The decision made on the review page: include, exclude or correct (None: unreviewed).
    review: str | None = None
    #: Why it was excluded (koalabot.store.review.REASONS).
    review_reason: str | None = None
    #: The answer it should have given, for a corrected answer.
    correction: str | None = None
    #: Each vote on it, opted-out voters' too, as `koalabot.store.ballots.ballots` reads them
    #: (None: no votes, or none read: a SQLite file's reader looks them up, `Thread.ballots_of`).
    ballots: str | None = None
    #: "A" or "B": one of the two answers of a side-by-side battle.
    side: str | None = None

    @property
    def net(self) -> int:
        """Up-votes minus down-votes (of users who did not opt out)."""
        return self.up - self.down


@dataclass(slots=True)
class Thread:
    """A conversation with every message an export may need, in the order they were written."""

    id: int
    platform: str
    messages: list[ThreadMessage] = field(default_factory=list)
    #: An answer's votes as text, by its id (`ThreadMessage.ballots` where the read has them).
    ballots_of: Callable[[int], str | None] | None = None


def _voted_conversations(scope: ThreadScope, ranged: bool = False) -> Select[Any]:
    vm, vc = aliased(Message), aliased(Conversation)
    return (
        select(vm.conversation_id)
        .join(Feedback, Feedback.message_id == vm.id)
        .join(vc, vc.id == vm.conversation_id)
        .where(*conversation_filters(vc, scope), *_in_range(vm.conversation_id, ranged))
    )


def _in_range(column: Any, ranged: bool) -> list[ColumnElement[bool]]:
    """Conversation ids from the FIRST to the LAST bound, filled in at each read."""
    if not ranged:
        return []
    return [column.between(bindparam(_Bound.FIRST.value), bindparam(_Bound.LAST.value))]


def _thread_query(scope: ThreadScope, dialect: str, ranged: bool = False) -> Select[Any]:
    m, c, g, r = Message, Conversation, Generation, Review
    answer = m.role == "assistant"
    up, down, ballots, voted, votes = message_votes(scope, dialect, lazy=ranged)
    # SQLite stores times as text; parsing one per row would cost more than the rest of the row,
    # so they come raw and only rated answers' are parsed.
    created = type_coerce(m.created_at, String) if dialect == "sqlite" else m.created_at
    query = select(  # ThreadMessage's fields, in order
        m.conversation_id,
        c.platform,
        m.id,
        m.role,
        m.author,
        m.text,
        m.status,
        m.parent_id,
        created,
        case((answer, up), else_=0),
        case((answer, down), else_=0),
        func.coalesce(m.model, g.model_id),  # the KOALABOT_MODELS name where there is one
        g.template,
        g.prompt if scope.with_prompts else null(),
        literal(0),  # ignored: opted-out voters are taken off in Python
        r.decision,
        r.reason,
        r.correction,
        case((answer, ballots), else_=null()),
        m.side,
    )
    if dialect == "sqlite":
        # Conversations in the outer loop, each checked once for a vote; SQLite would otherwise
        # join every vote of the range to its message up front.
        vm, vf = aliased(Message), aliased(Feedback)
        has_votes: Any = exists().where(vm.conversation_id == c.id, vf.message_id == vm.id)
        has_votes = or_(has_votes, c.id.in_(judged_conversations()))  # battles (store/battles)
        query = query.select_from(c).join(m, m.conversation_id == c.id)
        in_range, order = _in_range(c.id, ranged), c.id
    else:
        voted_or_judged = _voted_conversations(scope, ranged).union(judged_conversations())
        has_votes = m.conversation_id.in_(voted_or_judged)  # judged: battles (store/battles)
        query = query.join(c, c.id == m.conversation_id)
        in_range, order = _in_range(m.conversation_id, ranged), m.conversation_id
    if votes is not None:
        query = query.outerjoin(votes, votes.c.message_id == m.id)
    return (
        query.outerjoin(g, g.message_id == m.id)
        .outerjoin(r, r.message_id == m.id)
        .where(
            *conversation_filters(c, scope),
            *in_range,
            has_votes,
            # Context needs user messages and shown answers; other answers only if voted on.
            or_(m.role == "user", m.status == "ok", voted),
        )
        .order_by(order, m.id)
    )


def is_opted_out(platform: str, user: str, optout_users: Collection[str]) -> bool:
    """A "platform:id" entry opts one account out; a bare id opts it out on every platform."""
    return f"{platform}:{user}" in optout_users or user in optout_users


async def _optout_votes(
    conn: AsyncConnection, scope: ThreadScope, optout_users: Collection[str]
) -> dict[int, tuple[int, int]]:
    """(up, down) cast by opted-out users, by answer: only their votes, never all votes."""
    ids = sorted({u.rpartition(":")[2] for u in optout_users})
    f, fm, fc = Feedback, aliased(Message), aliased(Conversation)
    ignored: dict[int, tuple[int, int]] = {}
    for start in range(0, len(ids), 500):
        rows = await conn.execute(
            select(f.message_id, f.rating, fc.platform, f.user)
            .join(fm, fm.id == f.message_id)
            .join(fc, fc.id == fm.conversation_id)
            .where(
                f.user.in_(ids[start : start + 500]),
                fm.role == "assistant",
                *conversation_filters(fc, scope),
            )
        )
        for message_id, rating, platform, user in rows:
            if is_opted_out(platform, user, optout_users):
                up, down = ignored.get(message_id, (0, 0))
                ignored[message_id] = (up + (rating > 0), down + (rating < 0))
    return ignored


# --- reads ------------------------------------------------------------------------------------


async def optout_keys(db: Database) -> set[str]:
    """Every user ("platform:id") who opted out through the bot (a consent list: small)."""
    try:
        async with db.engine.connect() as conn:
            return set((await conn.scalars(select(OptOut.user_key))).all())
    except SQLAlchemyError as exc:
        raise store_error(exc) from exc


async def count_threads(db: Database, scope: ThreadScope) -> int:
    """How many conversations have votes (the total behind the export's progress line)."""
    sub = _voted_conversations(scope).distinct().subquery()
    try:
        async with db.engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(sub)) or 0)
    except SQLAlchemyError as exc:
        raise store_error(exc) from exc


async def stream_threads(
    db: Database, scope: ThreadScope, optout_users: Collection[str] = ()
) -> AsyncGenerator[Thread, None]:
    """Conversations that have votes, one at a time, in id order; memory holds one thread.

    ``optout_users`` is every opted-out user ("platform:id", or a bare id for every platform);
    their votes are moved from ``up``/``down`` to ``ignored``. (`koalabot export` reads a SQLite
    file through `sqlite_threads` instead.)
    """
    query = _thread_query(scope, db.dialect)
    try:
        async with db.engine.connect() as conn:
            ignored = await _optout_votes(conn, scope, optout_users) if optout_users else {}
            result = await conn.stream(query.execution_options(yield_per=BATCH))
            threads = _Threads(ignored)
            async for batch in result.partitions(BATCH):
                for thread in threads.add(batch):
                    yield thread
            for thread in threads.rest():
                yield thread
    except SQLAlchemyError as exc:
        raise store_error(exc) from exc


class _Threads:
    """Rows in conversation order, a batch at a time, into whole threads (a conversation may
    span two batches)."""

    def __init__(
        self,
        ignored: dict[int, tuple[int, int]],
        ballots_of: Callable[[int], str | None] | None = None,
    ) -> None:
        self.ignored = ignored
        self.ballots_of = ballots_of
        self.current = Thread(0, "")

    def add(self, batch: Iterable[Sequence[Any]]) -> Iterator[Thread]:
        """The threads this batch completes."""
        ignored = self.ignored
        for conversation_id, rows in groupby(batch, _CONVERSATION_ID):
            messages = list(map(_MESSAGE, rows))
            if ignored:
                messages = [_take_off(m, ignored[m.id]) if m.id in ignored else m for m in messages]
            if conversation_id == self.current.id:
                self.current.messages += messages
                continue
            if self.current.messages:
                yield self.current
            self.current = Thread(conversation_id, messages[0].platform, messages, self.ballots_of)

    def rest(self) -> Iterator[Thread]:
        """The last thread, once every batch is in."""
        if self.current.messages:
            yield self.current
            self.current = Thread(0, "")


_CONVERSATION_ID = itemgetter(0)
# ThreadMessage._make without its length check (the query has the fields): a C call per row.
_MESSAGE = functools.partial(tuple.__new__, ThreadMessage)


class _Bound(Enum):
    """Stand-ins for the conversation id range in a ranged query's parameters."""

    FIRST = "first_conversation"
    LAST = "last_conversation"


@dataclass(frozen=True)
class SqliteThreads:
    """The export's thread query on a SQLite file, as SQL text, read one range of conversation
    ids at a time: ranges can be read by several processes at once, and each row costs no
    SQLAlchemy or asyncio machinery. Plain data, so it can go to a worker.

    Read through APSW, not the stdlib driver: APSW brings a current SQLite (whose planner runs
    this query several times faster than the 3.40 many systems ship) and, with a connection kept
    to one thread, skips a mutex per column read. An export reads a million rows, so that is
    about a third of its time.
    """

    path: str
    sql: str
    #: The query's parameters, with `_Bound` stand-ins for the range.
    params: tuple[Any, ...]
    #: (up, down) votes of opted-out users, by answer: moved to ``ignored``.
    ignored: dict[int, tuple[int, int]]
    #: The lowest and highest conversation id in the store (0, -1 when there are none).
    first: int
    last: int

    def open(self) -> ThreadReader:
        """A reader of ranges, to use on the thread that opened it, that writes nothing.

        Open no stdlib sqlite3 connection to the same file in this process while it is open:
        two SQLite libraries do not see each other's file locks.
        """
        return ThreadReader(self, _sqlite_connect(self.path))


class ThreadReader:
    """One connection to a `SqliteThreads` file, reading a range of conversations at a time
    (kept to the thread that opened it: the connection skips SQLite's mutex)."""

    def __init__(self, threads: SqliteThreads, conn: apsw.Connection) -> None:
        self._threads = threads
        self._conn = conn

    def read(self, first: int, last: int) -> Iterator[Thread]:
        """Conversations with votes and ids from ``first`` to ``last``, whole, in id order."""
        bounds = {_Bound.FIRST: first, _Bound.LAST: last}
        params = [bounds[p] if isinstance(p, _Bound) else p for p in self._threads.params]
        threads = _Threads(self._threads.ignored, self._ballots)
        try:
            # The cursor as one batch: `add` yields each thread as the next one starts.
            yield from threads.add(self._conn.execute(self._threads.sql, params))
        except apsw.Error as exc:
            raise StoreError(f"database error: {exc}") from exc
        yield from threads.rest()

    def _ballots(self, answer_id: int) -> str | None:
        try:
            return self._conn.execute(SQLITE_BALLOTS, (answer_id,)).get  # type: ignore[no-any-return]
        except apsw.Error as exc:
            raise StoreError(f"database error: {exc}") from exc

    def close(self) -> None:
        """Close the connection (on the thread that opened it)."""
        self._conn.close()


async def sqlite_threads(
    db: Database, scope: ThreadScope, optout_users: Collection[str] = ()
) -> SqliteThreads | None:
    """What `SqliteThreads` needs, for a SQLite file (None for PostgreSQL or in-memory SQLite).

    ``optout_users`` as for `stream_threads`. For a file, ``db`` is left with no open
    connection: its readers go through APSW's SQLite, which does not see the locks of the
    engine's, and worker processes start as copies of this one.
    """
    path = _sqlite_file(db)
    if path is None:
        return None
    c = Conversation
    try:
        async with db.engine.connect() as conn:
            ignored = await _optout_votes(conn, scope, optout_users) if optout_users else {}
            first, last = (await conn.execute(select(func.min(c.id), func.max(c.id)))).one()
    except SQLAlchemyError as exc:
        raise store_error(exc) from exc
    sql, params = _sqlite_statement(db, _thread_query(scope, db.dialect, ranged=True))
    if first is None:
        first, last = 0, -1
    await db.engine.dispose()
    return SqliteThreads(path, sql, tuple(params), ignored, first, last)


def _sqlite_file(db: Database) -> str | None:
    """The file of a SQLite database (None for PostgreSQL and in-memory SQLite)."""
    if db.dialect != "sqlite":
        return None
    name = db.engine.url.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return name


def _sqlite_statement(db: Database, query: Select[Any]) -> tuple[str, list[Any]]:
    """The query as SQLite SQL text and its positional parameters, as the engine would bind them
    (`_Bound` stand-ins for a range's bounds)."""
    dialect = db.engine.dialect
    compiled = query.compile(dialect=dialect)
    bounds = {bound.value: bound for bound in _Bound}
    params: list[Any] = []
    for name in compiled.positiontup or ():
        if name in bounds:
            params.append(bounds[name])
            continue
        value = compiled.params[name]
        bind = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        params.append(bind(value) if bind is not None else value)
    return str(compiled), params


def _sqlite_connect(path: str) -> apsw.Connection:
    # Read-write without create: an existing database only, never a new empty file (and a WAL
    # database's shared memory needs write access); query_only keeps it from writing. NOMUTEX:
    # each connection stays on one thread. Busy timeout as the engine's.
    flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_NOMUTEX
    try:
        conn = apsw.Connection(str(Path(path).absolute()), flags=flags)
        conn.set_busy_timeout(round(sqlite_busy_timeout() * 1000))
        conn.pragma("query_only", True)
    except apsw.Error as exc:
        raise StoreError(f"database error: cannot open {path}: {exc}") from exc
    return conn


def _take_off(message: ThreadMessage, votes: tuple[int, int]) -> ThreadMessage:
    up, down = votes
    return message._replace(up=message.up - up, down=message.down - down, ignored=up + down)


__all__ = [
    "BATCH",
    "SqliteThreads",
    "Thread",
    "ThreadMessage",
    "ThreadReader",
    "ThreadScope",
    "count_threads",
    "is_opted_out",
    "optout_keys",
    "sqlite_threads",
    "stream_threads",
]
