"""The engine's window on the store: small async functions, each one transaction.

Everything here returns plain dataclasses, so nothing outside koalabot/store sees SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar, cast

from sqlalchemy import (
    Connection,
    Select,
    Table,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from koalabot.errors import StoreError
from koalabot.events import ThreadKey
from koalabot.store.database import Database
from koalabot.store.inline import InlineLane, LaneStatement
from koalabot.store.models import (
    Conversation,
    Feedback,
    Generation,
    Message,
    MessageRef,
    OptOut,
    ProcessedEvent,
    utcnow,
)
from koalabot.store.tails import RecentThreads


class StoredMessage(NamedTuple):
    """A message as the prompt builder needs it (a tuple: hundreds are read per answer)."""

    id: int
    role: str
    text: str
    parent_id: int | None
    status: str


@dataclass(frozen=True)
class Page:
    """Some of a thread's messages, newest first, and how many are older still."""

    messages: list[StoredMessage]
    older: int


@dataclass(frozen=True)
class AnswerStart:
    """A new answer's row, whether it is its thread's first, and the thread's newest
    messages when they were asked for."""

    answer_id: int
    first: bool
    tail: Page | None


@dataclass(frozen=True)
class AnswerInfo:
    """What the engine needs to regenerate or vote on an answer."""

    id: int
    conversation_id: int
    parent_id: int | None
    role: str
    where: ThreadKey
    model: str | None = None  # the model that made it


@dataclass(frozen=True)
class Orphan:
    """An answer a crashed process left `streaming` (now `interrupted`), and where it shows."""

    answer_id: int
    where: ThreadKey
    platform_message_id: str | None  # its placeholder, if it was posted


#: Earlier messages of a thread younger than this are answered first (see start_answer).
ORDER_WINDOW = timedelta(minutes=2)
#: How far back start_answer looks for earlier messages still waiting for their answer.
ORDER_LOOKBACK = 20
T = TypeVar("T")
#: processed_events key prefix of user messages the bot declined to answer.
_DECLINED = "koalabot:declined:"


@dataclass(frozen=True)
class GenerationRecord:
    """How one answer was produced (stored with it; training data is rebuilt from this)."""

    prompt: str
    template: str
    parameters: dict[str, Any]
    model_id: str | None = None
    endpoint: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    time_to_first_token: float | None = None
    total_time: float | None = None
    dropped_turns: int = 0
    error: str | None = None


def _earlier_waiting() -> Select[Any]:
    """Built once: this runs for every message, and building a statement costs more than
    running it on SQLite."""
    m, user, reply, handled = Message, aliased(Message), aliased(Message), ProcessedEvent
    recent = (
        select(m.id)
        .where(m.conversation_id == bindparam("conversation"), m.id < bindparam("before"))
        .order_by(m.id.desc())
        .limit(ORDER_LOOKBACK)
        .subquery()
    )
    return (
        select(user.id)
        .where(
            user.id.in_(select(recent.c.id)),
            user.role == "user",
            user.created_at > bindparam("since"),
            ~exists().where(reply.parent_id == user.id),
            ~exists().where(handled.message_id == user.id, handled.key.startswith(_DECLINED)),
        )
        .limit(1)
    )


_EARLIER_WAITING = _earlier_waiting()


class _Statements:
    """The statements of the per-message path, built once per dialect: on SQLite, building a
    statement costs more than running it."""

    def __init__(self, dialect: str) -> None:
        ins = pg_insert if dialect == "postgresql" else sqlite_insert
        m, c = _table(Message).c, _table(Conversation).c
        self.find_conversation = select(c.id).where(
            c.platform == bindparam("platform"),
            c.workspace == bindparam("workspace"),
            c.channel == bindparam("channel"),
            c.thread == bindparam("thread"),
        )
        self.add_conversation = ins(_table(Conversation)).on_conflict_do_nothing()
        self.add_message = insert(_table(Message)).returning(m.id)
        self.add_events = insert(_table(ProcessedEvent))
        self.answered = (
            select(m.id)
            .where(
                m.conversation_id == bindparam("conversation"),
                m.role == "assistant",
                m.status == "ok",
            )
            .limit(1)
        )
        self.finish = (
            update(_table(Message))
            .where(m.id == bindparam("answer"))
            .values(
                text=bindparam("new_text"),
                status=bindparam("new_status"),
                platform_message_id=func.coalesce(bindparam("shown_as"), m.platform_message_id),
                model=func.coalesce(bindparam("made_by"), m.model),
            )
        )
        self.add_generation = ins(_table(Generation)).on_conflict_do_nothing()
        self.add_refs = ins(_table(MessageRef)).on_conflict_do_nothing()
        self.older = (
            select(func.count())
            .select_from(_table(Message))
            .where(m.conversation_id == bindparam("conversation"), m.id < bindparam("before"))
        )
        self.newer = (
            select(m.id, m.role, m.text, m.parent_id, m.status)
            .where(m.conversation_id == bindparam("conversation"), m.id > bindparam("after"))
            .order_by(m.id.desc())
        )
        self._pages: dict[tuple[int, bool], Select[Any]] = {}

    def page(self, limit: int, before: bool) -> Select[Any]:
        """Newest-first messages of a conversation (older than ``before`` when paging on)."""
        key = (limit, before)
        if key not in self._pages:
            m = _table(Message).c
            query = (
                select(m.id, m.role, m.text, m.parent_id, m.status)
                .where(m.conversation_id == bindparam("conversation"))
                .order_by(m.id.desc())
                .limit(limit)
            )
            if before:
                query = query.where(m.id < bindparam("before"))
            self._pages[key] = query
        return self._pages[key]


def _table(model: Any) -> Table:
    return cast(Table, model.__table__)


_MESSAGE_KEYS = (
    "conversation_id",
    "role",
    "author",
    "text",
    "platform_message_id",
    "status",
    "parent_id",
    "created_at",
)


def _lane_statements(sql: _Statements, lane: InlineLane) -> dict[str, LaneStatement]:
    """The per-message statements, ready for SQLite's fast lane."""
    dialect = lane.engine.dialect
    generation = ("message_id", "created_at", *GenerationRecord.__dataclass_fields__)
    refs = ("message_id", "platform", "channel", "platform_message_id")
    return {
        "add_message": LaneStatement(sql.add_message, dialect, _MESSAGE_KEYS),
        "add_events": LaneStatement(sql.add_events, dialect, ("key", "message_id", "created_at")),
        "newer": LaneStatement(sql.newer, dialect),
        "finish": LaneStatement(sql.finish, dialect),
        "add_generation": LaneStatement(sql.add_generation, dialect, generation),
        "add_refs": LaneStatement(sql.add_refs, dialect, refs),
    }


class Repository:
    """Conversation memory: store user messages first, answers with their generation record.

    Each public method is one transaction, written as a plain function of a synchronous
    connection that ``Database.run`` runs (it may run twice, so it touches nothing else).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        # SQLite takes one writer at a time. Writers queued here wait their turn in order;
        # left to SQLite's busy handler, a burst of them sleeps and retries and can time out.
        self._write_lock = asyncio.Lock() if db.dialect == "sqlite" else None
        self._locks = _LockSession(db) if db.dialect == "postgresql" else None
        self._sql = _Statements(db.dialect)
        self._threads = RecentThreads() if db.inline is not None else None
        self._fast = _lane_statements(self._sql, db.inline) if db.inline is not None else None

    async def _run(self, work: Callable[[Connection], T], *, write: bool = False) -> T:
        lock = self._write_lock if write else None
        try:
            async with lock or contextlib.nullcontext():
                return await self.db.run(work)
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise StoreError() from exc
        except OSError as exc:  # the driver lost its socket (PostgreSQL restarted)
            raise StoreError() from exc

    def _lane(self, conn: Connection) -> InlineLane | None:
        """The SQLite fast lane, when ``conn`` is its connection."""
        lane = self.db.inline
        return lane if lane is not None and lane.owns(conn) else None

    def _add_message(self, conn: Connection, values: dict[str, Any]) -> int:
        lane = self._lane(conn)
        if lane is not None and self._fast is not None:
            return int(lane.execute(self._fast["add_message"], values).fetchone()[0])
        return int(conn.execute(self._sql.add_message, values).scalar_one())

    def _execute(
        self, conn: Connection, name: str, params: dict[str, Any] | list[dict[str, Any]]
    ) -> None:
        """Run one of the per-message statements that return nothing (for each of a list)."""
        lane = self._lane(conn)
        if lane is None or self._fast is None:
            conn.execute(getattr(self._sql, name), params)
        elif isinstance(params, list):
            lane.execute_many(self._fast[name], params)
        else:
            lane.execute(self._fast[name], params)

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        await self._run(lambda conn: conn.execute(text("SELECT 1")).all())

    # --- conversations -------------------------------------------------------------------

    async def conversation_id(self, where: ThreadKey) -> int | None:
        """The id of the conversation in that thread, if the bot has one there."""
        return await self._run(lambda conn: self._find_conversation(conn, where))

    def _find_conversation(self, conn: Connection, where: ThreadKey) -> int | None:
        found = conn.execute(
            self._sql.find_conversation,
            {
                "platform": where.platform,
                "workspace": where.workspace,
                "channel": where.channel,
                "thread": where.thread,
            },
        ).scalar()
        return int(found) if found is not None else None

    def _ensure_conversation(self, conn: Connection, where: ThreadKey) -> int:
        recent = self._recent(conn)
        found = recent.conversation(where) if recent else None
        if found is not None:
            return found
        found = self._find_conversation(conn, where)
        if found is not None:
            if recent:
                recent.keep_conversation(where, found)
            return found
        values = {
            "platform": where.platform,
            "workspace": where.workspace,
            "channel": where.channel,
            "thread": where.thread,
            "created_at": utcnow(),
        }
        conn.execute(self._sql.add_conversation, values)
        found = self._find_conversation(conn, where)
        assert found is not None
        return found

    async def ensure_conversation(self, where: ThreadKey) -> int:
        """The conversation in that thread, created if it is new."""
        return await self._run(lambda conn: self._ensure_conversation(conn, where), write=True)

    async def latest_thread(self, platform: str, workspace: str, channel: str) -> str | None:
        """The newest conversation's thread id in a channel (a DM's current conversation)."""
        c = Conversation
        query = (
            select(c.thread)
            .where(c.platform == platform, c.workspace == workspace, c.channel == channel)
            .order_by(c.id.desc())
            .limit(1)
        )
        found = await self._run(lambda conn: conn.execute(query).scalar())
        return str(found) if found is not None else None

    # --- messages --------------------------------------------------------------------------

    async def add_user_message(
        self,
        where: ThreadKey,
        author: str,
        text_: str,
        platform_message_id: str,
        dedupe_keys: Sequence[str],
        received_at: datetime | None = None,
    ) -> tuple[int, int] | None:
        """Commit a user's message (and claim its delivery ids) in one transaction; stamped
        ``received_at`` when it arrived earlier than now (kept in the spool meanwhile).

        Returns (conversation id, message id), or None when a delivery id was already claimed.
        """
        now = received_at or utcnow()
        keys = list(dict.fromkeys(key[:255] for key in dedupe_keys))

        def work(conn: Connection) -> tuple[int, int]:
            conv = self._ensure_conversation(conn, where)
            message = {
                "conversation_id": conv,
                "role": "user",
                "author": author,
                "text": text_,
                "platform_message_id": platform_message_id,
                "status": "ok",
                "parent_id": None,
                "created_at": now,
            }
            msg_id = self._add_message(conn, message)
            if keys:
                events = [{"key": k, "message_id": msg_id, "created_at": now} for k in keys]
                self._execute(conn, "add_events", events)
            return conv, msg_id

        try:
            return await self._run(work, write=True)
        except IntegrityError:
            return None

    async def start_answer(
        self,
        conversation_id: int,
        parent_id: int,
        platform_message_id: str | None = None,
        *,
        tail: int = 0,
    ) -> AnswerStart:
        """Create the answer row (status `streaming`) before the first token is asked for, with
        its placeholder's platform message id (so a restart after a crash can find it), and read
        the newest ``tail`` messages of the thread, which the prompt needs next.

        One transaction, as this runs for every message.
        """
        answer = {
            "conversation_id": conversation_id,
            "role": "assistant",
            "author": None,
            "text": "",
            "platform_message_id": platform_message_id,
            "status": "streaming",
            "parent_id": parent_id,
            "created_at": utcnow(),
        }

        def work(conn: Connection) -> AnswerStart:
            new_id = self._add_message(conn, answer)
            page = self._page(conn, conversation_id, None, tail) if tail else None
            answered = page is not None and any(
                m.role == "assistant" and m.status == "ok" for m in page.messages
            )
            if not answered and (page is None or page.older):
                params = {"conversation": conversation_id}
                answered = conn.execute(self._sql.answered, params).first() is not None
            return AnswerStart(new_id, not answered, page)

        return await self._run(work, write=True)

    async def earlier_waiting(self, conversation_id: int, message_id: int) -> bool:
        """Whether a recent message of the thread, older than ``message_id``, has no answer yet
        (nor was declined): replicas, or tasks, may take a burst of messages in any order, and
        the engine answers them in order."""
        params = {
            "conversation": conversation_id,
            "before": message_id,
            "since": utcnow() - ORDER_WINDOW,
        }
        found = await self._run(lambda conn: conn.execute(_EARLIER_WAITING, params).scalar())
        return found is not None

    async def unanswered(self, delivery_ids: Sequence[str]) -> tuple[int, int] | None:
        """The (conversation id, message id) of the user message taken in under one of
        ``delivery_ids``, unless it has an answer (of any status) or was declined."""
        m, reply, key, handled = Message, aliased(Message), ProcessedEvent, aliased(ProcessedEvent)
        query = (
            select(m.conversation_id, m.id)
            .join(key, key.message_id == m.id)
            .where(
                key.key.in_([k[:255] for k in delivery_ids]),
                m.role == "user",
                ~exists().where(reply.parent_id == m.id),
                ~exists().where(handled.message_id == m.id, handled.key.startswith(_DECLINED)),
            )
        )
        found = await self._run(lambda conn: conn.execute(query.limit(1)).first())
        return (int(found[0]), int(found[1])) if found is not None else None

    async def decline(self, message_id: int) -> None:
        """Record that the bot will not answer a user message (empty, rate-limited, shutting
        down), so later messages of its thread do not wait for its answer."""
        stmt = (
            self._insert(ProcessedEvent)
            .values(key=f"{_DECLINED}{message_id}", message_id=message_id, created_at=utcnow())
            .on_conflict_do_nothing()
        )
        await self._run(lambda conn: conn.execute(stmt), write=True)

    async def finish_answer(
        self,
        answer_id: int,
        text_: str,
        status: str,
        record: GenerationRecord | None,
        where: ThreadKey | None = None,
        platform_message_ids: Sequence[str] = (),
        *,
        model: str | None = None,
    ) -> None:
        """Commit an answer's final text and status with its generation record (and, when
        given, the platform messages it shows as, and the model that made it) in one
        transaction."""
        changes = {
            "answer": answer_id,
            "new_text": text_,
            "new_status": status,
            "shown_as": platform_message_ids[0] if platform_message_ids else None,
            "made_by": model,
        }
        generation = (
            {"message_id": answer_id, "created_at": utcnow(), **record.__dict__}
            if record is not None
            else None
        )
        refs = self._refs(answer_id, where, platform_message_ids) if where is not None else []

        def work(conn: Connection) -> None:
            self._execute(conn, "finish", changes)
            if generation is not None:
                self._execute(conn, "add_generation", generation)
            if refs:
                self._execute(conn, "add_refs", refs)

        await self._run(work, write=True)

    @staticmethod
    def _refs(answer_id: int, where: ThreadKey, ids: Sequence[str]) -> list[dict[str, Any]]:
        return [
            {
                "message_id": answer_id,
                "platform": where.platform,
                "channel": where.channel,
                "platform_message_id": pmid,
            }
            for pmid in dict.fromkeys(ids)
        ]

    async def add_refs(
        self, answer_id: int, where: ThreadKey, platform_message_ids: Sequence[str]
    ) -> None:
        """Remember more platform messages an answer shows as, so reactions find them."""
        refs = self._refs(answer_id, where, platform_message_ids)
        if refs:
            await self._run(lambda conn: self._execute(conn, "add_refs", refs), write=True)

    async def history(
        self, conversation_id: int, *, before_id: int | None = None, limit: int = 64
    ) -> list[StoredMessage]:
        """One page of the thread, newest first, older than ``before_id`` (keyset paging)."""
        page = await self.history_page(conversation_id, before_id=before_id, limit=limit)
        return page.messages

    async def history_page(
        self, conversation_id: int, *, before_id: int | None = None, limit: int = 64
    ) -> Page:
        """One page of the thread, newest first, and how many messages are older than it."""
        return await self._run(lambda conn: self._page(conn, conversation_id, before_id, limit))

    def _recent(self, conn: Connection) -> RecentThreads | None:
        """What is kept of recent threads, when ``conn`` is the SQLite lane's and so can tell
        whether it is still true."""
        lane = self._lane(conn)
        if self._threads is None or lane is None:
            return None
        self._threads.sync(lane.data_version())
        return self._threads

    def _newer(self, conn: Connection, conversation_id: int, after: int) -> list[StoredMessage]:
        since = {"conversation": conversation_id, "after": after}
        lane = self._lane(conn)
        rows: Any
        if lane is not None and self._fast is not None:
            rows = lane.execute(self._fast["newer"], since).fetchall()
        else:
            rows = conn.execute(self._sql.newer, since).all()
        return [StoredMessage._make(row) for row in rows]

    def _page(
        self, conn: Connection, conversation_id: int, before_id: int | None, limit: int
    ) -> Page:
        recent = self._recent(conn) if before_id is None else None
        kept = recent.tail(conversation_id) if recent else None
        if kept is not None:
            newer = self._newer(conn, conversation_id, kept.last)
            rows = newer + list(kept.messages)
            if len(rows) >= limit or not kept.older:
                page = Page(rows[:limit], kept.older + max(0, len(rows) - limit))
                assert recent is not None
                recent.keep_tail(conversation_id, page.messages, page.older, fresh=len(newer))
                return page
        params: dict[str, Any] = {"conversation": conversation_id, "before": before_id}
        found = conn.execute(self._sql.page(limit, before_id is not None), params).all()
        older = 0
        if len(found) == limit:
            last = {"conversation": conversation_id, "before": found[-1][0]}
            older = int(conn.execute(self._sql.older, last).scalar() or 0)
        page = Page(list(map(StoredMessage._make, found)), older)
        if recent:
            recent.keep_tail(conversation_id, page.messages, older, fresh=len(page.messages))
        return page

    async def answer(self, answer_id: int) -> AnswerInfo | None:
        """An answer (or any message) with its thread, for votes and regeneration."""
        m, c = Message, Conversation
        query = (
            select(
                m.id,
                m.conversation_id,
                m.parent_id,
                m.role,
                c.platform,
                c.workspace,
                c.channel,
                c.thread,
                m.model,
            )
            .join(c, c.id == m.conversation_id)
            .where(m.id == answer_id)
        )
        row = await self._run(lambda conn: conn.execute(query).first())
        if row is None:
            return None
        where = ThreadKey(row[4], row[5], row[6], row[7])
        return AnswerInfo(int(row[0]), int(row[1]), row[2], row[3], where, row[8])

    async def generation(self, answer_id: int) -> GenerationRecord | None:
        """How an answer was produced, as stored with it."""
        g = Generation
        fields = [getattr(g, name) for name in GenerationRecord.__dataclass_fields__]
        query = select(*fields).where(g.message_id == answer_id)
        row = await self._run(lambda conn: conn.execute(query).first())
        return GenerationRecord(*row) if row is not None else None

    async def answer_by_ref(
        self, platform: str, channel: str, platform_message_id: str
    ) -> int | None:
        """The answer shown as that platform message, if any."""
        r = MessageRef
        query = select(r.message_id).where(
            r.platform == platform,
            r.channel == channel,
            r.platform_message_id == platform_message_id,
        )
        found = await self._run(lambda conn: conn.execute(query).scalar())
        return int(found) if found is not None else None

    def _insert(self, model: Any) -> Any:
        if self.db.dialect == "postgresql":
            return pg_insert(model)
        return sqlite_insert(model)

    async def recover_interrupted(self) -> list[Orphan]:
        """Answers a crashed process left `streaming` become `interrupted`; returns them.

        On PostgreSQL other replicas may be answering right now: a thread counts only when its
        advisory lock is free (a crashed holder's session, and so its lock, is gone).
        """
        m, c = Message, Conversation
        found: list[Orphan] = []
        try:
            async with self.db.engine.connect() as conn:
                threads = (
                    await conn.scalars(select(m.conversation_id).where(m.status == "streaming"))
                ).all()
                await conn.commit()
                for conversation_id in dict.fromkeys(threads):
                    if not await self._try_lock(conn, conversation_id):
                        continue
                    try:
                        streaming = (m.conversation_id == conversation_id, m.status == "streaming")
                        rows = (
                            await conn.execute(
                                select(
                                    m.id,
                                    m.platform_message_id,
                                    c.platform,
                                    c.workspace,
                                    c.channel,
                                    c.thread,
                                )
                                .join(c, c.id == m.conversation_id)
                                .where(*streaming)
                            )
                        ).all()
                        await conn.execute(update(m).where(*streaming).values(status="interrupted"))
                        await conn.commit()
                    finally:
                        await self._unlock(conn, conversation_id)
                    found += [
                        Orphan(int(r[0]), ThreadKey(r[2], r[3], r[4], r[5]), r[1]) for r in rows
                    ]
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError() from exc
        return found

    # --- feedback ----------------------------------------------------------------------------

    async def vote(
        self, answer_id: int, user: str, rating: int, *, at: datetime | None = None
    ) -> None:
        """Record a vote (cast ``at``, when that was earlier than now); the latest vote of a
        user on an answer wins."""
        now = at or utcnow()
        stmt = self._insert(Feedback).values(
            message_id=answer_id, user=user, rating=rating, created_at=now, updated_at=now
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["message_id", "user"], set_={"rating": rating, "updated_at": now}
        )
        await self._run(lambda conn: conn.execute(stmt), write=True)

    async def unvote(self, answer_id: int, user: str, rating: int | None = None) -> bool:
        """Remove a user's vote (only if it is still ``rating``, when given); True if removed."""
        f = Feedback
        stmt = delete(f).where(f.message_id == answer_id, f.user == user)
        if rating is not None:
            stmt = stmt.where(f.rating == rating)
        removed = await self._run(lambda conn: conn.execute(stmt).rowcount, write=True)
        return bool(removed)

    async def votes(self, answer_id: int) -> dict[str, int]:
        """Current votes on an answer, by user."""
        f = Feedback
        query = select(f.user, f.rating).where(f.message_id == answer_id)
        rows = await self._run(lambda conn: conn.execute(query).all())
        return {r[0]: int(r[1]) for r in rows}

    # --- consent -------------------------------------------------------------------------------

    async def opt_out(self, user_key: str) -> None:
        """Remember that a user ("platform:id") wants nothing of theirs used for training."""
        stmt = (
            self._insert(OptOut)
            .values(user_key=user_key, created_at=utcnow())
            .on_conflict_do_nothing()
        )
        await self._run(lambda conn: conn.execute(stmt), write=True)

    async def is_opted_out(self, user_key: str) -> bool:
        """Whether the user opted out through the bot."""
        query = select(OptOut.user_key).where(OptOut.user_key == user_key)
        found = await self._run(lambda conn: conn.execute(query).scalar())
        return found is not None

    # --- locking ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def thread_lock(self, conversation_id: int) -> AsyncIterator[None]:
        """Hold a database-level lock on a conversation (PostgreSQL; other replicas wait).

        SQLite has one writer process by nature, so the engine's in-process lock suffices there.
        """
        if self._locks is None:
            yield
            return
        delay = 0.01
        while (held := await self._locks.try_lock(conversation_id)) is None:
            await asyncio.sleep(delay)  # another replica is answering in this thread
            delay = min(delay * 2, 0.25)
        try:
            yield
        finally:
            await self._locks.unlock(conversation_id, held)

    async def close(self) -> None:
        """Give back the connection that holds this process's thread locks."""
        if self._locks is not None:
            await self._locks.close()

    async def _try_lock(self, conn: AsyncConnection, conversation_id: int) -> bool:
        if self.db.dialect != "postgresql":
            return True
        got = await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": conversation_id})
        await conn.commit()
        return bool(got)

    async def _unlock(self, conn: AsyncConnection, conversation_id: int) -> None:
        if self.db.dialect == "postgresql":
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": conversation_id})
            await conn.commit()


class _LockSession:
    """The one PostgreSQL session that holds this process's thread locks.

    Advisory locks belong to a session. Holding each on a pooled connection for the length of
    an answer would take one connection per answer in flight, and with the pool used up the
    lock holders could not get one for their own queries. One session holds them all instead;
    waiting is polling with ``pg_try_advisory_lock``, since a blocking wait would stall it.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._conn: AsyncConnection | None = None
        self._session = 0  # which session the locks taken now belong to
        self._use = asyncio.Lock()  # one statement at a time on the connection

    async def try_lock(self, key: int) -> int | None:
        """Take the lock if it is free: the session it is held by, else None."""
        async with self._use:
            try:
                if self._conn is None:
                    conn = await self._db.engine.connect()
                    self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    self._session += 1
                got = await self._conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
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
                await self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            except (SQLAlchemyError, OSError):
                await self._drop()

    async def close(self) -> None:
        async with self._use:
            await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(SQLAlchemyError, OSError):
                await conn.invalidate()
