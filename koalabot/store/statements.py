"""The repository's SQL statements, built once.

On SQLite, building a SQLAlchemy statement costs more than running it, so the statements of the
per-message path are built once per dialect (``Statements``) and handed, compiled, to the SQLite
fast lane (``lane_statements``). The rarer queries are small builders, so the repository reads
as what it does rather than how the SQL is spelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Select, Table, Update, bindparam, exists, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import aliased

from koalabot.events import ThreadKey
from koalabot.store.inline import InlineLane, LaneStatement
from koalabot.store.models import (
    Conversation,
    Feedback,
    Generation,
    Message,
    MessageRef,
    OptOut,
    ProcessedEvent,
)
from koalabot.store.records import GenerationRecord

#: Earlier messages of a thread younger than this are answered first (see start_answer).
ORDER_WINDOW = timedelta(minutes=2)
#: How far back start_answer looks for earlier messages still waiting for their answer.
ORDER_LOOKBACK = 20
#: processed_events key prefix of user messages the bot declined to answer.
DECLINED = "koalabot:declined:"

#: The columns of a message row, in the order the fast lane binds them.
MESSAGE_KEYS = (
    "conversation_id",
    "role",
    "author",
    "text",
    "platform_message_id",
    "status",
    "parent_id",
    "created_at",
    "side",
)


def table(model: Any) -> Table:
    """A mapped class's Table (core statements skip the ORM's per-statement work)."""
    return cast(Table, model.__table__)


def upsert(dialect: str, model: Any) -> Any:
    """An INSERT that can say ON CONFLICT, in the dialect's spelling."""
    return pg_insert(model) if dialect == "postgresql" else sqlite_insert(model)


def stored_key(
    platform: str, workspace: str, channel: str, thread: str, parent: str | None
) -> ThreadKey:
    """A thread's key as read back from the conversations table."""
    return ThreadKey(platform, workspace, channel, thread, parent or "")


def thread_keys(where: ThreadKey) -> dict[str, str]:
    """A thread's four keys as the conversations table names them."""
    return {
        "platform": where.platform,
        "workspace": where.workspace,
        "channel": where.channel,
        "thread": where.thread,
    }


def message_row(
    conversation_id: int, role: str, text: str, created_at: datetime, **rest: Any
) -> dict[str, Any]:
    """A messages row: ``rest`` gives author, platform_message_id, status and parent_id where
    they differ from a user message's (no parent, ``ok``)."""
    row = {"conversation_id": conversation_id, "role": role, "author": None, "text": text}
    row |= {"platform_message_id": None, "status": "ok", "parent_id": None, "side": None}
    return row | {"created_at": created_at} | rest


def ref_rows(answer_id: int, where: ThreadKey, ids: Sequence[str]) -> list[dict[str, Any]]:
    """message_refs rows: the platform messages an answer shows as (each once)."""
    place = {"message_id": answer_id, "platform": where.platform, "channel": where.channel}
    return [place | {"platform_message_id": pmid} for pmid in dict.fromkeys(ids)]


def latest_thread(platform: str, workspace: str, channel: str) -> Select[Any]:
    """The newest conversation's thread id in a channel."""
    c = Conversation
    where = (c.platform == platform, c.workspace == workspace, c.channel == channel)
    return select(c.thread).where(*where).order_by(c.id.desc()).limit(1)


def decline(dialect: str, message_id: int, at: datetime) -> Any:
    """Mark a user message as one the bot will not answer (once)."""
    key = f"{DECLINED}{message_id}"
    values = {"key": key, "message_id": message_id, "created_at": at}
    return upsert(dialect, ProcessedEvent).values(**values).on_conflict_do_nothing()


def cast_vote(dialect: str, answer_id: int, user: str, rating: int, at: datetime) -> Any:
    """A user's vote on an answer, replacing their earlier one."""
    row = {"message_id": answer_id, "user": user, "rating": rating}
    stmt = upsert(dialect, Feedback).values(**row, created_at=at, updated_at=at)
    latest = {"rating": rating, "updated_at": at}
    return stmt.on_conflict_do_update(index_elements=["message_id", "user"], set_=latest)


def shown_as(answer_id: int, platform: str, channel: str, platform_message_id: str) -> Select[Any]:
    """Whether an answer shows as a platform message: one of its parts (message_refs), or the
    placeholder it was posted as (a failed answer keeps only that)."""
    r, m, c = MessageRef, Message, Conversation
    part = select(r.id).where(
        r.message_id == answer_id,
        r.platform == platform,
        r.channel == channel,
        r.platform_message_id == platform_message_id,
    )
    placeholder = (
        select(m.id)
        .join(c, c.id == m.conversation_id)
        .where(
            m.id == answer_id,
            m.platform_message_id == platform_message_id,
            c.platform == platform,
            c.channel == channel,
        )
    )
    return select(exists(part) | exists(placeholder))


def opt_out(dialect: str, user_key: str, at: datetime) -> Any:
    """Remember a user's opt-out (once)."""
    row = {"user_key": user_key, "created_at": at}
    return upsert(dialect, OptOut).values(**row).on_conflict_do_nothing()


def interrupt(conversation_id: int) -> Update:
    """A thread's `streaming` answers become `interrupted`."""
    m = Message
    still = (m.conversation_id == conversation_id, m.status == "streaming")
    return update(m).where(*still).values(status="interrupted")


def _not_declined(message: Any) -> Any:
    handled = aliased(ProcessedEvent)
    return ~exists().where(handled.message_id == message.id, handled.key.startswith(DECLINED))


def _earlier_waiting() -> Select[Any]:
    m, user, reply = Message, aliased(Message), aliased(Message)
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
            _not_declined(user),
        )
        .limit(1)
    )


#: A recent user message of the thread older than ``before``, not answered nor declined; built
#: once: this runs for every message.
EARLIER_WAITING = _earlier_waiting()


def unanswered(delivery_ids: Sequence[str]) -> Select[int, int]:
    """The user message taken in under one of ``delivery_ids``, unless it has an answer (of
    any status) or was declined: (conversation id, message id)."""
    m, reply, key = Message, aliased(Message), ProcessedEvent
    return (
        select(m.conversation_id, m.id)
        .join(key, key.message_id == m.id)
        .where(
            key.key.in_([k[:255] for k in delivery_ids]),
            m.role == "user",
            ~exists().where(reply.parent_id == m.id),
            _not_declined(m),
        )
        .limit(1)
    )


def answer_with_thread(answer_id: int) -> Select[Any]:
    """A message's id, conversation, parent and role, its thread's four keys, its model, its
    side in a battle and its thread's parent channel."""
    m, c = Message, Conversation
    return (
        select(m.id, m.conversation_id, m.parent_id, m.role)
        .add_columns(c.platform, c.workspace, c.channel, c.thread, m.model, m.side, c.parent)
        .join(c, c.id == m.conversation_id)
        .where(m.id == answer_id)
    )


def streaming_in(conversation_id: int) -> Select[Any]:
    """A thread's answers still `streaming`: id, placeholder, then the thread's four keys and
    its parent channel."""
    m, c = Message, Conversation
    return (
        select(m.id, m.platform_message_id)
        .add_columns(c.platform, c.workspace, c.channel, c.thread, c.parent)
        .join(c, c.id == m.conversation_id)
        .where(m.conversation_id == conversation_id, m.status == "streaming")
    )


def generation_of(answer_id: int) -> Select[Any]:
    """An answer's generation record, columns in GenerationRecord's order."""
    fields = [getattr(Generation, name) for name in GenerationRecord.__dataclass_fields__]
    return select(*fields).where(Generation.message_id == answer_id)


class Statements:
    """The statements of the per-message path, built once per dialect."""

    def __init__(self, dialect: str) -> None:
        m, c = table(Message).c, table(Conversation).c
        self.find_conversation = select(c.id).where(
            c.platform == bindparam("platform"),
            c.workspace == bindparam("workspace"),
            c.channel == bindparam("channel"),
            c.thread == bindparam("thread"),
        )
        self.add_conversation = upsert(dialect, table(Conversation)).on_conflict_do_nothing()
        self.add_message = insert(table(Message)).returning(m.id)
        self.add_events = insert(table(ProcessedEvent))
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
            update(table(Message))
            .where(m.id == bindparam("answer"))
            .values(
                text=bindparam("new_text"),
                status=bindparam("new_status"),
                platform_message_id=func.coalesce(bindparam("shown_as"), m.platform_message_id),
                model=func.coalesce(bindparam("made_by"), m.model),
            )
        )
        self.add_generation = upsert(dialect, table(Generation)).on_conflict_do_nothing()
        self.add_refs = upsert(dialect, table(MessageRef)).on_conflict_do_nothing()
        self.older = (
            select(func.count())
            .select_from(table(Message))
            .where(m.conversation_id == bindparam("conversation"), m.id < bindparam("before"))
        )
        self.newer = (
            select(m.id, m.role, m.text, m.parent_id, m.status, m.side)
            .where(m.conversation_id == bindparam("conversation"), m.id > bindparam("after"))
            .order_by(m.id.desc())
        )
        self._pages: dict[tuple[int, bool], Select[Any]] = {}

    def page(self, limit: int, before: bool) -> Select[Any]:
        """Newest-first messages of a conversation (older than ``before`` when paging on)."""
        key = (limit, before)
        if key not in self._pages:
            m = table(Message).c
            query = (
                select(m.id, m.role, m.text, m.parent_id, m.status, m.side)
                .where(m.conversation_id == bindparam("conversation"))
                .order_by(m.id.desc())
                .limit(limit)
            )
            if before:
                query = query.where(m.id < bindparam("before"))
            self._pages[key] = query
        return self._pages[key]


def lane_statements(sql: Statements, lane: InlineLane) -> dict[str, LaneStatement]:
    """The per-message statements, ready for SQLite's fast lane."""
    dialect = lane.engine.dialect
    generation = ("message_id", "created_at", *GenerationRecord.__dataclass_fields__)
    refs = ("message_id", "platform", "channel", "platform_message_id")
    return {
        "add_message": LaneStatement(sql.add_message, dialect, MESSAGE_KEYS),
        "add_events": LaneStatement(sql.add_events, dialect, ("key", "message_id", "created_at")),
        "newer": LaneStatement(sql.newer, dialect),
        "finish": LaneStatement(sql.finish, dialect),
        "add_generation": LaneStatement(sql.add_generation, dialect, generation),
        "add_refs": LaneStatement(sql.add_refs, dialect, refs),
    }
