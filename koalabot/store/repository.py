"""The engine's window on the store: small async functions, each one transaction.

Everything here returns plain dataclasses, so nothing outside koalabot/store sees SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Select, bindparam, delete, exists, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from koalabot.errors import StoreError
from koalabot.events import ThreadKey
from koalabot.store.database import Database
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


@dataclass(frozen=True)
class StoredMessage:
    """A message as the prompt builder needs it."""

    id: int
    role: str
    text: str
    parent_id: int | None
    status: str


@dataclass(frozen=True)
class AnswerInfo:
    """What the engine needs to regenerate or vote on an answer."""

    id: int
    conversation_id: int
    parent_id: int | None
    role: str
    where: ThreadKey


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


class Repository:
    """Conversation memory: store user messages first, answers with their generation record."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # SQLite takes one writer at a time. Writers queued here wait their turn in order;
        # left to SQLite's busy handler, a burst of them sleeps and retries and can time out.
        self._write_lock = asyncio.Lock() if db.dialect == "sqlite" else None
        self._locks = _LockSession(db) if db.dialect == "postgresql" else None

    @contextlib.asynccontextmanager
    async def _tx(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        lock = self._write_lock if write else None
        try:
            async with lock or contextlib.nullcontext(), self.db.engine.begin() as conn:
                yield conn
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise StoreError() from exc
        except OSError as exc:  # the driver lost its socket (PostgreSQL restarted)
            raise StoreError() from exc

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        async with self._tx() as conn:
            await conn.execute(text("SELECT 1"))

    # --- conversations -------------------------------------------------------------------

    async def conversation_id(self, where: ThreadKey) -> int | None:
        """The id of the conversation in that thread, if the bot has one there."""
        async with self._tx() as conn:
            return await self._find_conversation(conn, where)

    async def _find_conversation(self, conn: AsyncConnection, where: ThreadKey) -> int | None:
        c = Conversation
        found = await conn.scalar(
            select(c.id).where(
                c.platform == where.platform,
                c.workspace == where.workspace,
                c.channel == where.channel,
                c.thread == where.thread,
            )
        )
        return int(found) if found is not None else None

    async def _ensure_conversation(self, conn: AsyncConnection, where: ThreadKey) -> int:
        found = await self._find_conversation(conn, where)
        if found is not None:
            return found
        values = {
            "platform": where.platform,
            "workspace": where.workspace,
            "channel": where.channel,
            "thread": where.thread,
            "created_at": utcnow(),
        }
        stmt = self._insert(Conversation).values(**values).on_conflict_do_nothing()
        await conn.execute(stmt)
        found = await self._find_conversation(conn, where)
        assert found is not None
        return found

    def _insert(self, model: Any) -> Any:
        if self.db.dialect == "postgresql":
            return pg_insert(model)
        return sqlite_insert(model)

    async def ensure_conversation(self, where: ThreadKey) -> int:
        """The conversation in that thread, created if it is new."""
        async with self._tx() as conn:
            return await self._ensure_conversation(conn, where)

    async def latest_thread(self, platform: str, workspace: str, channel: str) -> str | None:
        """The newest conversation's thread id in a channel (a DM's current conversation)."""
        c = Conversation
        async with self._tx() as conn:
            found = await conn.scalar(
                select(c.thread)
                .where(c.platform == platform, c.workspace == workspace, c.channel == channel)
                .order_by(c.id.desc())
                .limit(1)
            )
        return str(found) if found is not None else None

    # --- messages --------------------------------------------------------------------------

    async def add_user_message(
        self,
        where: ThreadKey,
        author: str,
        text_: str,
        platform_message_id: str,
        dedupe_keys: Sequence[str],
    ) -> tuple[int, int] | None:
        """Commit a user's message (and claim its delivery ids) in one transaction.

        Returns (conversation id, message id), or None when a delivery id was already claimed.
        """
        try:
            async with self._tx(write=True) as conn:
                conv = await self._ensure_conversation(conn, where)
                msg_id = await conn.scalar(
                    self._insert(Message)
                    .values(
                        conversation_id=conv,
                        role="user",
                        author=author,
                        text=text_,
                        platform_message_id=platform_message_id,
                        status="ok",
                        created_at=utcnow(),
                    )
                    .returning(Message.id)
                )
                now = utcnow()
                for key in dict.fromkeys(dedupe_keys):
                    await conn.execute(
                        self._insert(ProcessedEvent).values(
                            key=key[:255], message_id=msg_id, created_at=now
                        )
                    )
        except IntegrityError:
            return None
        assert msg_id is not None
        return conv, int(msg_id)

    async def start_answer(
        self, conversation_id: int, parent_id: int, platform_message_id: str | None = None
    ) -> tuple[int, bool]:
        """Create the answer row (status `streaming`) before the first token is asked for, with
        its placeholder's platform message id (so a restart after a crash can find it).

        Returns its id and whether it is the thread's first answer (the consent notice goes on
        that one); one transaction, as this runs for every message.
        """
        m = Message
        async with self._tx(write=True) as conn:
            earlier = await conn.scalar(
                select(m.id)
                .where(
                    m.conversation_id == conversation_id, m.role == "assistant", m.status == "ok"
                )
                .limit(1)
            )
            new_id = await conn.scalar(
                self._insert(Message)
                .values(
                    conversation_id=conversation_id,
                    role="assistant",
                    author=None,
                    text="",
                    platform_message_id=platform_message_id,
                    status="streaming",
                    parent_id=parent_id,
                    created_at=utcnow(),
                )
                .returning(Message.id)
            )
        assert new_id is not None
        return int(new_id), earlier is None

    async def earlier_waiting(self, conversation_id: int, message_id: int) -> bool:
        """Whether a recent message of the thread, older than ``message_id``, has no answer yet
        (nor was declined): replicas, or tasks, may take a burst of messages in any order, and
        the engine answers them in order."""
        params = {"conversation": conversation_id, "before": message_id}
        async with self._tx() as conn:
            found = await conn.scalar(
                _EARLIER_WAITING, {**params, "since": utcnow() - ORDER_WINDOW}
            )
        return found is not None

    async def decline(self, message_id: int) -> None:
        """Record that the bot will not answer a user message (empty, rate-limited, shutting
        down), so later messages of its thread do not wait for its answer."""
        async with self._tx(write=True) as conn:
            await conn.execute(
                self._insert(ProcessedEvent)
                .values(key=f"{_DECLINED}{message_id}", message_id=message_id, created_at=utcnow())
                .on_conflict_do_nothing()
            )

    async def finish_answer(
        self,
        answer_id: int,
        text_: str,
        status: str,
        record: GenerationRecord | None,
        where: ThreadKey | None = None,
        platform_message_ids: Sequence[str] = (),
    ) -> None:
        """Commit an answer's final text and status with its generation record (and, when
        given, the platform messages it shows as) in one transaction."""
        first = platform_message_ids[0] if platform_message_ids else None
        async with self._tx(write=True) as conn:
            values: dict[str, Any] = {"text": text_, "status": status}
            if first is not None:
                values["platform_message_id"] = first
            await conn.execute(update(Message).where(Message.id == answer_id).values(**values))
            if record is not None:
                await conn.execute(
                    self._insert(Generation)
                    .values(message_id=answer_id, created_at=utcnow(), **record.__dict__)
                    .on_conflict_do_nothing()
                )
            if where is not None:
                await self._insert_refs(conn, answer_id, where, platform_message_ids)

    async def _insert_refs(
        self, conn: AsyncConnection, answer_id: int, where: ThreadKey, ids: Sequence[str]
    ) -> None:
        rows = [
            {
                "message_id": answer_id,
                "platform": where.platform,
                "channel": where.channel,
                "platform_message_id": pmid,
            }
            for pmid in dict.fromkeys(ids)
        ]
        if rows:
            await conn.execute(self._insert(MessageRef).on_conflict_do_nothing(), rows)

    async def add_refs(
        self, answer_id: int, where: ThreadKey, platform_message_ids: Sequence[str]
    ) -> None:
        """Remember more platform messages an answer shows as, so reactions find them."""
        if platform_message_ids:
            async with self._tx(write=True) as conn:
                await self._insert_refs(conn, answer_id, where, platform_message_ids)

    async def history(
        self, conversation_id: int, *, before_id: int | None = None, limit: int = 64
    ) -> list[StoredMessage]:
        """One page of the thread, newest first, older than ``before_id`` (keyset paging)."""
        page, _ = await self.history_page(conversation_id, before_id=before_id, limit=limit)
        return page

    async def history_page(
        self, conversation_id: int, *, before_id: int | None = None, limit: int = 64
    ) -> tuple[list[StoredMessage], int]:
        """One page of the thread, newest first, and how many messages are older than it —
        one transaction, as the engine reads the tail of a thread for every answer."""
        m = Message
        query = (
            select(m.id, m.role, m.text, m.parent_id, m.status)
            .where(m.conversation_id == conversation_id)
            .order_by(m.id.desc())
            .limit(limit)
        )
        if before_id is not None:
            query = query.where(m.id < before_id)
        async with self._tx() as conn:
            rows = (await conn.execute(query)).all()
            older = 0
            if len(rows) == limit:
                older = int(
                    await conn.scalar(
                        select(func.count())
                        .select_from(m)
                        .where(m.conversation_id == conversation_id, m.id < rows[-1][0])
                    )
                    or 0
                )
        page = [StoredMessage(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]
        return page, older

    async def answer(self, answer_id: int) -> AnswerInfo | None:
        """An answer (or any message) with its thread, for votes and regeneration."""
        m, c = Message, Conversation
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(
                        m.id,
                        m.conversation_id,
                        m.parent_id,
                        m.role,
                        c.platform,
                        c.workspace,
                        c.channel,
                        c.thread,
                    )
                    .join(c, c.id == m.conversation_id)
                    .where(m.id == answer_id)
                )
            ).first()
        if row is None:
            return None
        return AnswerInfo(
            int(row[0]), int(row[1]), row[2], row[3], ThreadKey(row[4], row[5], row[6], row[7])
        )

    async def generation(self, answer_id: int) -> GenerationRecord | None:
        """How an answer was produced, as stored with it."""
        g = Generation
        fields = [getattr(g, name) for name in GenerationRecord.__dataclass_fields__]
        async with self._tx() as conn:
            row = (await conn.execute(select(*fields).where(g.message_id == answer_id))).first()
        return GenerationRecord(*row) if row is not None else None

    async def answer_by_ref(
        self, platform: str, channel: str, platform_message_id: str
    ) -> int | None:
        """The answer shown as that platform message, if any."""
        r = MessageRef
        async with self._tx() as conn:
            found = await conn.scalar(
                select(r.message_id).where(
                    r.platform == platform,
                    r.channel == channel,
                    r.platform_message_id == platform_message_id,
                )
            )
        return int(found) if found is not None else None

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

    async def vote(self, answer_id: int, user: str, rating: int) -> None:
        """Record a vote; the latest vote of a user on an answer wins."""
        now = utcnow()
        stmt = self._insert(Feedback).values(
            message_id=answer_id, user=user, rating=rating, created_at=now, updated_at=now
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["message_id", "user"], set_={"rating": rating, "updated_at": now}
        )
        async with self._tx(write=True) as conn:
            await conn.execute(stmt)

    async def unvote(self, answer_id: int, user: str, rating: int | None = None) -> bool:
        """Remove a user's vote (only if it is still ``rating``, when given); True if removed."""
        f = Feedback
        stmt = delete(f).where(f.message_id == answer_id, f.user == user)
        if rating is not None:
            stmt = stmt.where(f.rating == rating)
        async with self._tx(write=True) as conn:
            result = await conn.execute(stmt)
        return bool(result.rowcount)

    async def votes(self, answer_id: int) -> dict[str, int]:
        """Current votes on an answer, by user."""
        f = Feedback
        async with self._tx() as conn:
            rows = (
                await conn.execute(select(f.user, f.rating).where(f.message_id == answer_id))
            ).all()
        return {r[0]: int(r[1]) for r in rows}

    # --- consent -------------------------------------------------------------------------------

    async def opt_out(self, user_key: str) -> None:
        """Remember that a user ("platform:id") wants nothing of theirs used for training."""
        async with self._tx(write=True) as conn:
            await conn.execute(
                self._insert(OptOut)
                .values(user_key=user_key, created_at=utcnow())
                .on_conflict_do_nothing()
            )

    async def is_opted_out(self, user_key: str) -> bool:
        """Whether the user opted out through the bot."""
        async with self._tx() as conn:
            found = await conn.scalar(select(OptOut.user_key).where(OptOut.user_key == user_key))
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
