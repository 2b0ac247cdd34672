"""User messages an earlier process stored but never answered, found at start.

A process killed while it answered leaves that answer `streaming` (recover_interrupted marks it
`interrupted`), and may leave more: the thread's next messages, stored and waiting for their
turn, with no answer at all. They are found here so the engine can answer them or say why not.

Looked for only in the last ``WINDOW``: a message older than that was left by some crash long
ago, and a notice in a thread idle for days would surprise more than help. On PostgreSQL other
replicas may be answering right now: a thread counts only while its lock is free, and a message
only once it is older than ``settled``, the longest a live replica leaves a stored message
without holding its thread (it waits, lock released, for earlier messages: ORDER_WAIT).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby

from sqlalchemy import Select, and_, exists, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from koalabot.errors import StoreError
from koalabot.events import ThreadKey
from koalabot.store.database import Database
from koalabot.store.locks import try_lock_on, unlock_on
from koalabot.store.models import Conversation, Message, ProcessedEvent, utcnow
from koalabot.store.statements import DECLINED, stored_key
from koalabot.store.times import as_utc

#: How far back a start looks for messages left without an answer.
WINDOW = timedelta(days=1)


@dataclass(frozen=True)
class Waiting:
    """A stored user message without an answer, and what answering it needs."""

    conversation_id: int
    message_id: int
    where: ThreadKey
    author: str
    text: str
    platform_message_id: str
    created_at: datetime


def _query(since: datetime, before: datetime) -> Select[tuple[object, ...]]:
    m, reply, c, handled = Message, aliased(Message), Conversation, aliased(ProcessedEvent)
    declined = and_(handled.message_id == m.id, handled.key.startswith(DECLINED))
    return (
        select(m.conversation_id, m.id, c.platform, c.workspace, c.channel, c.thread, c.parent)
        .add_columns(m.author, m.text, m.platform_message_id, m.created_at)
        .join(c, c.id == m.conversation_id)
        .where(
            m.role == "user",
            m.created_at > since,
            m.created_at <= before,
            ~exists().where(reply.parent_id == m.id),
            ~exists().where(declined),
        )
        .order_by(m.conversation_id, m.id)
    )


def _record(row: tuple[object, ...]) -> Waiting:
    conversation_id, message_id, *key, author, text, platform_message_id, created_at = row
    platform, workspace, channel, thread, parent = (str(part or "") for part in key)
    return Waiting(
        int(str(conversation_id)),
        int(str(message_id)),
        stored_key(platform, workspace, channel, thread, parent),
        str(author or ""),
        str(text),
        str(platform_message_id or ""),
        as_utc(created_at if isinstance(created_at, (datetime, str)) else str(created_at)),
    )


async def find_unanswered(db: Database, settled: timedelta) -> list[Waiting]:
    """Every user message of the last ``WINDOW`` with no answer (of any status) that was not
    declined, in threads nobody is answering now; oldest first within each thread."""
    now = utcnow()
    query = _query(now - WINDOW, now - settled if db.dialect == "postgresql" else now)
    try:
        async with db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            await conn.commit()
            found: list[Waiting] = []
            for conversation_id, thread in groupby(map(_record, rows), lambda w: w.conversation_id):
                if await _free(conn, conversation_id):
                    found += thread
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError() from exc
    return found


async def _free(conn: AsyncConnection, conversation_id: int) -> bool:
    """Whether no live process holds the thread (always, on SQLite)."""
    if not await try_lock_on(conn, conversation_id):
        return False
    await unlock_on(conn, conversation_id)
    return True


__all__ = ["WINDOW", "Waiting", "find_unanswered"]
