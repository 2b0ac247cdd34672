"""The engine's window on the store: small async functions, each one transaction.

Everything here returns the plain records of koalabot/store/records.py, so nothing outside
koalabot/store sees SQLAlchemy. The statements live in statements.py (built once: on SQLite,
building one costs more than running it) and the PostgreSQL thread locks in locks.py.

This module is also the façade the engine imports the records from: they are re-exported below
on purpose, so callers need one import line for the store's side of an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, delete, select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from koalabot.errors import StoreError
from koalabot.events import ThreadKey
from koalabot.store import statements as sql
from koalabot.store.database import Database
from koalabot.store.errors import failure
from koalabot.store.inline import InlineLane
from koalabot.store.locks import LockSession, try_lock_on, unlock_on
from koalabot.store.models import Feedback, Message, MessageRef, OptOut, utcnow
from koalabot.store.records import AnswerInfo as AnswerInfo
from koalabot.store.records import AnswerStart as AnswerStart
from koalabot.store.records import GenerationRecord as GenerationRecord
from koalabot.store.records import Orphan as Orphan
from koalabot.store.records import Page as Page
from koalabot.store.records import StoredMessage as StoredMessage
from koalabot.store.resends import resent_message
from koalabot.store.statements import ORDER_LOOKBACK as ORDER_LOOKBACK
from koalabot.store.statements import ORDER_WINDOW as ORDER_WINDOW
from koalabot.store.storable import storable, storable_row
from koalabot.store.tails import RecentThreads

__all__ = [
    "ORDER_LOOKBACK",
    "ORDER_WINDOW",
    "AnswerInfo",
    "AnswerStart",
    "GenerationRecord",
    "Orphan",
    "Page",
    "Repository",
    "StoredMessage",
]

T = TypeVar("T")


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
        self._locks = LockSession(db) if db.dialect == "postgresql" else None
        self._sql = sql.Statements(db.dialect)
        self._threads = RecentThreads() if db.inline is not None else None
        self._fast = sql.lane_statements(self._sql, db.inline) if db.inline is not None else None

    async def _run(self, work: Callable[[Connection], T], *, write: bool = False) -> T:
        lock = self._write_lock if write else None
        try:
            async with lock or contextlib.nullcontext():
                return await self.db.run(work)
        except IntegrityError:
            raise
        # Unreachable (kept for later) or refused (not): OSError is a driver that lost its
        # socket (PostgreSQL restarted); ValueError, OverflowError one that could not encode a
        # value (sqlite3 raises them unwrapped).
        except (SQLAlchemyError, OSError, ValueError, OverflowError) as exc:
            raise failure(exc) from exc

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
        found = conn.execute(self._sql.find_conversation, sql.thread_keys(where)).scalar()
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
        values = sql.thread_keys(where) | {"created_at": utcnow(), "parent": where.parent or None}
        conn.execute(self._sql.add_conversation, values)
        found = self._find_conversation(conn, where)
        assert found is not None
        return found

    async def ensure_conversation(self, where: ThreadKey) -> int:
        """The conversation in that thread, created if it is new."""
        return await self._run(lambda conn: self._ensure_conversation(conn, where), write=True)

    async def latest_thread(self, platform: str, workspace: str, channel: str) -> str | None:
        """The newest conversation's thread id in a channel (a DM's current conversation)."""
        query = sql.latest_thread(platform, workspace, channel)
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
        *,
        resend_retries: bool = False,
    ) -> tuple[int, int] | None:
        """Commit a user's message (and claim its delivery ids) in one transaction; stamped
        ``received_at`` when it arrived earlier than now (kept in the spool meanwhile). With
        ``resend_retries``, a resend after a failed answer (`resends`) stores nothing new.

        Returns (conversation id, message id), or None when a delivery id was already claimed.
        """
        now = received_at or utcnow()
        keys = list(dict.fromkeys(storable(key[:255]) for key in dedupe_keys))
        shown_as = {"author": author, "platform_message_id": platform_message_id}

        def work(conn: Connection) -> tuple[int, int]:
            conv = self._ensure_conversation(conn, where)
            resent = resent_message(conn, conv, author, storable(text_)) if resend_retries else None
            if resent:
                self._claim(conn, keys, resent, now)
                return conv, resent
            row = sql.message_row(conv, "user", text_, now) | shown_as
            msg_id = self._add_message(conn, storable_row(row))
            self._claim(conn, keys, msg_id, now)
            return conv, msg_id

        try:
            return await self._run(work, write=True)
        except IntegrityError:
            return None

    def _claim(self, conn: Connection, keys: list[str], message_id: int, now: datetime) -> None:
        if keys:
            events = [{"key": k, "message_id": message_id, "created_at": now} for k in keys]
            self._execute(conn, "add_events", events)

    async def start_answer(
        self,
        conversation_id: int,
        parent_id: int,
        platform_message_id: str | None = None,
        *,
        tail: int = 0,
        side: str | None = None,
    ) -> AnswerStart:
        """Create the answer row (status `streaming`) before the first token is asked for, with
        its placeholder's platform message id (so a restart after a crash can find it) and its
        ``side`` in a battle, and read the newest ``tail`` messages of the thread, which the
        prompt needs next.

        One transaction, as this runs for every message.
        """
        answer = sql.message_row(conversation_id, "assistant", "", utcnow(), status="streaming")
        answer |= {"parent_id": parent_id, "platform_message_id": platform_message_id}
        answer["side"] = side

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
            "since": utcnow() - sql.ORDER_WINDOW,
        }
        found = await self._run(lambda conn: conn.execute(sql.EARLIER_WAITING, params).scalar())
        return found is not None

    async def unanswered(self, delivery_ids: Sequence[str]) -> tuple[int, int] | None:
        """The (conversation id, message id) of the user message taken in under one of
        ``delivery_ids``, unless it has an answer (of any status) or was declined."""
        query = sql.unanswered(delivery_ids)
        found = await self._run(lambda conn: conn.execute(query).first())
        return (int(found[0]), int(found[1])) if found is not None else None

    async def decline(self, message_id: int) -> None:
        """Record that the bot will not answer a user message (empty, rate-limited, shutting
        down), so later messages of its thread do not wait for its answer."""
        stmt = sql.decline(self.db.dialect, message_id, utcnow())
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
            "new_text": storable(text_),
            "new_status": status,
            "shown_as": platform_message_ids[0] if platform_message_ids else None,
            "made_by": model,
        }
        generation = (
            storable_row({"message_id": answer_id, "created_at": utcnow(), **record.__dict__})
            if record is not None
            else None
        )
        refs = sql.ref_rows(answer_id, where, platform_message_ids) if where else []

        def work(conn: Connection) -> None:
            self._execute(conn, "finish", changes)
            if generation is not None:
                self._execute(conn, "add_generation", generation)
            if refs:
                self._execute(conn, "add_refs", refs)

        await self._run(work, write=True)

    async def add_refs(
        self, answer_id: int, where: ThreadKey, platform_message_ids: Sequence[str]
    ) -> None:
        """Remember more platform messages an answer shows as, so reactions find them."""
        refs = sql.ref_rows(answer_id, where, platform_message_ids)
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

    @property
    def commits_elsewhere(self) -> int:
        """A number that changes when a read has found that another process committed since
        the read before (SQLite's ``data_version``); always 0 where that cannot be seen
        (PostgreSQL), so caches keyed by row id must check their rows too."""
        return self._threads.drops if self._threads is not None else 0

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
        query = sql.answer_with_thread(answer_id)
        row = await self._run(lambda conn: conn.execute(query).first())
        if row is None:
            return None
        where = sql.stored_key(row[4], row[5], row[6], row[7], row[10])
        return AnswerInfo(int(row[0]), int(row[1]), row[2], row[3], where, row[8], row[9])

    async def generation(self, answer_id: int) -> GenerationRecord | None:
        """How an answer was produced, as stored with it."""
        query = sql.generation_of(answer_id)
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

    async def shown_as(
        self, answer_id: int, platform: str, channel: str, platform_message_id: str
    ) -> bool:
        """Whether the answer shows as that platform message: one of its parts, or the
        placeholder it was posted as (a failed answer keeps only that)."""
        query = sql.shown_as(answer_id, platform, channel, platform_message_id)
        return bool(await self._run(lambda conn: conn.execute(query).scalar()))

    async def recover_interrupted(self) -> list[Orphan]:
        """Answers a crashed process left `streaming` become `interrupted`; returns them.

        On PostgreSQL other replicas may be answering right now: a thread counts only when its
        advisory lock is free (a crashed holder's session, and so its lock, is gone).
        """
        streaming = select(Message.conversation_id).where(Message.status == "streaming")
        found: list[Orphan] = []
        try:
            async with self.db.engine.connect() as conn:
                threads = (await conn.scalars(streaming)).all()
                await conn.commit()
                for conversation_id in dict.fromkeys(threads):
                    found += await self._interrupt(conn, conversation_id)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError() from exc
        return found

    @staticmethod
    async def _interrupt(conn: AsyncConnection, conversation_id: int) -> list[Orphan]:
        """Mark a thread's `streaming` answers `interrupted`, unless a replica holds it."""
        if not await try_lock_on(conn, conversation_id):
            return []
        try:
            rows = (await conn.execute(sql.streaming_in(conversation_id))).all()
            await conn.execute(sql.interrupt(conversation_id))
            await conn.commit()
        finally:
            await unlock_on(conn, conversation_id)
        return [Orphan(int(r[0]), sql.stored_key(*r[2:7]), r[1]) for r in rows]

    # --- feedback ----------------------------------------------------------------------------

    async def vote(
        self, answer_id: int, user: str, rating: int, *, at: datetime | None = None
    ) -> None:
        """Record a vote (cast ``at``, when that was earlier than now); the latest vote of a
        user on an answer wins."""
        stmt = sql.cast_vote(self.db.dialect, answer_id, user, rating, at or utcnow())
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
        stmt = sql.opt_out(self.db.dialect, user_key, utcnow())
        await self._run(lambda conn: conn.execute(stmt), write=True)

    async def opt_in(self, user_key: str) -> None:
        """Undo `opt_out`: the user's data may be used for training again."""
        stmt = delete(OptOut).where(OptOut.user_key == user_key)
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
        async with self._locks.hold(conversation_id):
            yield

    async def close(self) -> None:
        """Give back the connection that holds this process's thread locks."""
        if self._locks is not None:
            await self._locks.close()
