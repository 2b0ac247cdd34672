"""The SQL behind `koalabot export`, `stats` and `forget`: streamed reads, one-transaction deletes.

Everything leaves this module as plain dataclasses, so nothing else needs SQLAlchemy.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

import apsw
from sqlalchemy import (
    ColumnElement,
    Date,
    Select,
    String,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from koalabot.errors import StoreError
from koalabot.store.database import Database
from koalabot.store.models import (
    Conversation,
    Feedback,
    Generation,
    Message,
    MessageRef,
    OptOut,
    ProcessedEvent,
    Review,
)

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


@dataclass(frozen=True)
class StatsCell:
    """Answer counts for one (platform, channel, model, day)."""

    platform: str
    channel: str
    model: str | None
    day: date
    answers: int
    votes: int
    voted: int
    liked: int
    disliked: int


@dataclass(frozen=True)
class UserMessageCell:
    """User message counts for one (platform, channel, day)."""

    platform: str
    channel: str
    day: date
    user_messages: int
    conversations: int


@dataclass
class ForgetCounts:
    """What `koalabot forget` removed (or would remove, in a dry run)."""

    user_messages: int = 0
    answers: int = 0
    votes: int = 0
    generations: int = 0
    prompts_redacted: int = 0
    conversations: int = 0
    message_refs: int = 0
    processed_events: int = 0


# --- helpers ---------------------------------------------------------------------------------


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def _conversation_filters(c: Any, scope: ThreadScope) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if scope.platform is not None:
        filters.append(c.platform == scope.platform)
    if scope.channel is not None:
        filters.append(c.channel == scope.channel)
    if scope.until is not None:
        filters.append(c.created_at < scope.until)
    return filters


def _vote_totals(scope: ThreadScope) -> Any:
    """Per answer: all up-votes and down-votes (opted-out voters are taken off in Python)."""
    f = Feedback
    query = select(
        f.message_id.label("message_id"),
        func.sum(case((f.rating > 0, 1), else_=0)).label("up"),
        func.sum(case((f.rating < 0, 1), else_=0)).label("down"),
    )
    if scope.platform is not None or scope.channel is not None:
        fm, fc = aliased(Message), aliased(Conversation)
        query = (
            query.join(fm, fm.id == f.message_id)
            .join(fc, fc.id == fm.conversation_id)
            .where(*_conversation_filters(fc, scope))
        )
    return query.group_by(f.message_id).subquery("votes")


def _voted_conversations(scope: ThreadScope, ranged: bool = False) -> Select[Any]:
    vm, vc = aliased(Message), aliased(Conversation)
    return (
        select(vm.conversation_id)
        .join(Feedback, Feedback.message_id == vm.id)
        .join(vc, vc.id == vm.conversation_id)
        .where(*_conversation_filters(vc, scope), *_in_range(vm.conversation_id, ranged))
    )


def _in_range(column: Any, ranged: bool) -> list[ColumnElement[bool]]:
    """Conversation ids from the FIRST to the LAST bound, filled in at each read."""
    if not ranged:
        return []
    return [column.between(bindparam(_Bound.FIRST.value), bindparam(_Bound.LAST.value))]


def _thread_query(scope: ThreadScope, dialect: str, ranged: bool = False) -> Select[Any]:
    m, c, g, r = Message, Conversation, Generation, Review
    answer = m.role == "assistant"
    if dialect == "sqlite":
        # Each answer's votes looked up through feedback's (message_id, user) index: on SQLite
        # that costs less than grouping every vote into a table first, and nothing is built up
        # before the first row streams.
        f = aliased(Feedback)
        up: Any = select(func.count()).where(f.message_id == m.id, f.rating > 0)
        down: Any = select(func.count()).where(f.message_id == m.id, f.rating < 0)
        up, down = up.scalar_subquery(), down.scalar_subquery()
        voted: Any = exists().where(f.message_id == m.id)
        votes = None
    else:
        votes = _vote_totals(scope)
        up, down = func.coalesce(votes.c.up, 0), func.coalesce(votes.c.down, 0)
        voted = votes.c.message_id.is_not(None)
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
        g.model_id,
        g.template,
        g.prompt if scope.with_prompts else null(),
        literal(0),  # ignored: opted-out voters are taken off in Python
        r.decision,
        r.reason,
        r.correction,
    )
    if dialect == "sqlite":
        # Conversations in the outer loop, each checked once for a vote; SQLite would otherwise
        # join every vote of the range to its message up front.
        vm, vf = aliased(Message), aliased(Feedback)
        has_votes: Any = exists().where(vm.conversation_id == c.id, vf.message_id == vm.id)
        query = query.select_from(c).join(m, m.conversation_id == c.id)
        in_range, order = _in_range(c.id, ranged), c.id
    else:
        has_votes = m.conversation_id.in_(_voted_conversations(scope, ranged))
        query = query.join(c, c.id == m.conversation_id)
        in_range, order = _in_range(m.conversation_id, ranged), m.conversation_id
    if votes is not None:
        query = query.outerjoin(votes, votes.c.message_id == m.id)
    return (
        query.outerjoin(g, g.message_id == m.id)
        .outerjoin(r, r.message_id == m.id)
        .where(
            *_conversation_filters(c, scope),
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
                *_conversation_filters(fc, scope),
            )
        )
        for message_id, rating, platform, user in rows:
            if is_opted_out(platform, user, optout_users):
                up, down = ignored.get(message_id, (0, 0))
                ignored[message_id] = (up + (rating > 0), down + (rating < 0))
    return ignored


def _store_error(exc: BaseException) -> StoreError:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return StoreError(f"database error: {reason[0] if reason else type(exc).__name__}")


# --- export ------------------------------------------------------------------------------------


async def optout_keys(db: Database) -> set[str]:
    """Every user ("platform:id") who opted out through the bot (a consent list: small)."""
    try:
        async with db.engine.connect() as conn:
            return set((await conn.scalars(select(OptOut.user_key))).all())
    except SQLAlchemyError as exc:
        raise _store_error(exc) from exc


async def count_threads(db: Database, scope: ThreadScope) -> int:
    """How many conversations have votes (the total behind the export's progress line)."""
    sub = _voted_conversations(scope).distinct().subquery()
    try:
        async with db.engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(sub)) or 0)
    except SQLAlchemyError as exc:
        raise _store_error(exc) from exc


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
        raise _store_error(exc) from exc


class _Threads:
    """Rows in conversation order, a batch at a time, into whole threads (a conversation may
    span two batches)."""

    def __init__(self, ignored: dict[int, tuple[int, int]]) -> None:
        self.ignored = ignored
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
            self.current = Thread(conversation_id, messages[0].platform, messages)

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

    def connect(self) -> apsw.Connection:
        """A connection for `read`, to use on the thread that made it, that writes nothing.

        Open no stdlib sqlite3 connection to the same file in this process while it is open:
        two SQLite libraries do not see each other's file locks.
        """
        return _sqlite_connect(self.path)

    def read(self, conn: apsw.Connection, first: int, last: int) -> Iterator[Thread]:
        """Conversations with votes and ids from ``first`` to ``last``, whole, in id order."""
        bounds = {_Bound.FIRST: first, _Bound.LAST: last}
        params = [bounds[p] if isinstance(p, _Bound) else p for p in self.params]
        threads = _Threads(self.ignored)
        try:
            # The cursor as one batch: `add` yields each thread as the next one starts.
            yield from threads.add(conn.execute(self.sql, params))
        except apsw.Error as exc:
            raise StoreError(f"database error: {exc}") from exc
        yield from threads.rest()


async def sqlite_threads(
    db: Database, scope: ThreadScope, optout_users: Collection[str] = ()
) -> SqliteThreads | None:
    """What `SqliteThreads` needs, for a SQLite file (None for PostgreSQL or in-memory SQLite).

    ``optout_users`` as for `stream_threads`.
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
        raise _store_error(exc) from exc
    sql, params = _sqlite_statement(db, _thread_query(scope, db.dialect, ranged=True))
    if first is None:
        first, last = 0, -1
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
        conn.set_busy_timeout(5000)
        conn.pragma("query_only", True)
    except apsw.Error as exc:
        raise StoreError(f"database error: cannot open {path}: {exc}") from exc
    return conn


def _take_off(message: ThreadMessage, votes: tuple[int, int]) -> ThreadMessage:
    up, down = votes
    return message._replace(up=message.up - up, down=message.down - down, ignored=up + down)


# --- stats -------------------------------------------------------------------------------------


def _day(db: Database, column: Any) -> Any:
    if db.dialect == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)


def _time_filters(
    column: Any, since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if since is not None:
        filters.append(column >= since)
    if until is not None:
        filters.append(column < until)
    return filters


async def answer_stats(
    db: Database, since: datetime | None = None, until: datetime | None = None
) -> list[StatsCell]:
    """Answers and their votes grouped by platform, channel, model and day (all votes count)."""
    m, c, g, f = Message, Conversation, Generation, Feedback
    votes = (
        select(
            f.message_id.label("message_id"),
            func.count().label("n"),
            func.sum(f.rating).label("net"),
        )
        .group_by(f.message_id)
        .subquery("votes")
    )
    day = _day(db, m.created_at).label("day")
    query = (
        select(
            c.platform,
            c.channel,
            g.model_id,
            day,
            func.count(m.id),
            func.coalesce(func.sum(votes.c.n), 0),
            func.count(votes.c.message_id),
            func.sum(case((votes.c.net > 0, 1), else_=0)),
            func.sum(case((votes.c.net < 0, 1), else_=0)),
        )
        .join(c, c.id == m.conversation_id)
        .outerjoin(g, g.message_id == m.id)
        .outerjoin(votes, votes.c.message_id == m.id)
        .where(m.role == "assistant", *_time_filters(m.created_at, since, until))
        .group_by(c.platform, c.channel, g.model_id, day)
    )
    try:
        async with db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
    except SQLAlchemyError as exc:
        raise _store_error(exc) from exc
    return [
        StatsCell(r[0], r[1], r[2], _as_date(r[3]), r[4], int(r[5]), r[6], int(r[7]), int(r[8]))
        for r in rows
    ]


async def user_message_stats(
    db: Database, since: datetime | None = None, until: datetime | None = None
) -> list[UserMessageCell]:
    """User messages (and conversations they were in) by platform, channel and day."""
    m, c = Message, Conversation
    day = _day(db, m.created_at).label("day")
    query = (
        select(
            c.platform,
            c.channel,
            day,
            func.count(m.id),
            func.count(func.distinct(m.conversation_id)),
        )
        .join(c, c.id == m.conversation_id)
        .where(m.role == "user", *_time_filters(m.created_at, since, until))
        .group_by(c.platform, c.channel, day)
    )
    try:
        async with db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
    except SQLAlchemyError as exc:
        raise _store_error(exc) from exc
    return [UserMessageCell(r[0], r[1], _as_date(r[2]), r[3], r[4]) for r in rows]


# --- forget ------------------------------------------------------------------------------------


async def _delete_messages(conn: AsyncConnection, doomed: Any, counts: ForgetCounts) -> None:
    """Delete the messages selected by ``doomed`` (answers before the questions they answer)
    with everything that points at them, counting as it goes."""
    m = Message

    async def run(stmt: Any) -> int:
        return int((await conn.execute(stmt)).rowcount or 0)

    counts.votes += await run(delete(Feedback).where(Feedback.message_id.in_(doomed)))
    counts.generations += await run(delete(Generation).where(Generation.message_id.in_(doomed)))
    counts.message_refs += await run(delete(MessageRef).where(MessageRef.message_id.in_(doomed)))
    counts.processed_events += await run(
        delete(ProcessedEvent).where(ProcessedEvent.message_id.in_(doomed))
    )
    counts.answers += await run(delete(m).where(m.role == "assistant", m.id.in_(doomed)))
    counts.user_messages += await run(delete(m).where(m.role == "user", m.id.in_(doomed)))


async def _delete_empty_conversations(
    conn: AsyncConnection, ids: Sequence[int], counts: ForgetCounts
) -> None:
    c = Conversation
    empty = ~exists(select(Message.id).where(Message.conversation_id == c.id))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        result = await conn.execute(delete(c).where(c.id.in_(chunk), empty))
        counts.conversations += int(result.rowcount or 0)


def _their_messages(platform: str, user_id: str) -> Select[Any]:
    u, uc = aliased(Message), aliased(Conversation)
    return (
        select(u.id)
        .join(uc, uc.id == u.conversation_id)
        .where(uc.platform == platform, u.role == "user", u.author == user_id)
    )


async def forget_user(
    db: Database, platform: str, user_id: str, *, dry_run: bool = False
) -> ForgetCounts:
    """Delete a user's messages, every answer to them and every vote they cast, in one
    transaction.

    Later answers in the same threads keep their text, but their stored prompt strings (which
    quote the user) are emptied. Empty conversations go too. The opt-out record, if any, stays:
    it is what keeps the user's future messages out of training data.
    """
    # Every subquery reads its own alias, so none is silently correlated with a statement's
    # target table.
    theirs = _their_messages(platform, user_id)
    d = aliased(Message)
    doomed = select(d.id).where(or_(d.id.in_(theirs), d.parent_id.in_(theirs)))
    a, q = aliased(Message), aliased(Message)
    quoting_them = select(a.id).where(
        a.role == "assistant",
        a.id.not_in(doomed),
        exists(
            select(q.id).where(
                q.conversation_id == a.conversation_id, q.id < a.id, q.id.in_(theirs)
            )
        ),
    )
    pm, pc = aliased(Message), aliased(Conversation)
    on_platform = select(pm.id).join(pc, pc.id == pm.conversation_id).where(pc.platform == platform)
    t = aliased(Message)
    conversations = select(t.conversation_id).where(t.id.in_(theirs)).distinct()
    counts = ForgetCounts()
    try:
        async with db.engine.connect() as conn, conn.begin() as tx:
            conversation_ids = list((await conn.scalars(conversations)).all())
            redacted = await conn.execute(
                update(Generation)
                .where(Generation.message_id.in_(quoting_them), Generation.prompt != "")
                .values(prompt="")
            )
            counts.prompts_redacted = int(redacted.rowcount or 0)
            votes = await conn.execute(
                delete(Feedback).where(
                    Feedback.user == user_id, Feedback.message_id.in_(on_platform)
                )
            )
            counts.votes = int(votes.rowcount or 0)
            await _delete_messages(conn, doomed, counts)
            await _delete_empty_conversations(conn, conversation_ids, counts)
            if dry_run:
                await tx.rollback()
    except SQLAlchemyError as exc:
        raise _store_error(exc) from exc
    return counts


async def purge_idle(db: Database, cutoff: datetime, *, dry_run: bool = False) -> ForgetCounts:
    """Delete, in one transaction, every conversation with no message since ``cutoff`` — whole,
    with its messages, answers, generations and votes — and delivery ids older than it.

    Whole conversations, not single messages: a thread that is still in use keeps its start, so
    answers stay with their questions and stored prompts stay true.
    """
    ic, im = aliased(Conversation), aliased(Message)
    recent = exists(select(im.id).where(im.conversation_id == ic.id, im.created_at >= cutoff))
    idle = select(ic.id).where(ic.created_at < cutoff, ~recent)
    d = aliased(Message)
    doomed = select(d.id).where(d.conversation_id.in_(idle))
    counts = ForgetCounts()
    try:
        async with db.engine.connect() as conn, conn.begin() as tx:
            conversation_ids = list((await conn.scalars(idle)).all())
            await _delete_messages(conn, doomed, counts)
            await _delete_empty_conversations(conn, conversation_ids, counts)
            stale = await conn.execute(
                delete(ProcessedEvent).where(
                    ProcessedEvent.message_id.is_(None), ProcessedEvent.created_at < cutoff
                )
            )
            counts.processed_events += int(stale.rowcount or 0)
            if dry_run:
                await tx.rollback()
    except SQLAlchemyError as exc:
        raise _store_error(exc) from exc
    return counts


__all__ = [
    "BATCH",
    "ForgetCounts",
    "SqliteThreads",
    "StatsCell",
    "Thread",
    "ThreadMessage",
    "ThreadScope",
    "UserMessageCell",
    "answer_stats",
    "count_threads",
    "forget_user",
    "is_opted_out",
    "optout_keys",
    "purge_idle",
    "sqlite_threads",
    "stream_threads",
    "user_message_stats",
]
