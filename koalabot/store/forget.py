"""`koalabot forget` and the retention purge: a person's messages, or idle conversations, deleted
whole in one transaction with everything that points at them.

One transaction per call, so a failure leaves nothing half-forgotten; the cost is that a large
purge holds the database's write lock until it ends. A dry run does the same work and rolls it
back, so its counts are exactly what would go. `forget` also deletes the person's messages
and votes kept in the spool file (a transaction of its own, in another file: done first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, exists, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from koalabot.store.database import Database
from koalabot.store.errors import store_error
from koalabot.store.models import (
    Conversation,
    Feedback,
    Generation,
    Message,
    MessageRef,
    ProcessedEvent,
)
from koalabot.store.spool import Spool


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
    #: Messages and votes kept in the spool (the database was away when they came).
    spooled: int = 0


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
    db: Database,
    platform: str,
    user_id: str,
    *,
    dry_run: bool = False,
    spool: Spool | None = None,
) -> ForgetCounts:
    """Delete a user's messages, every answer to them and every vote they cast, in one
    transaction.

    Later answers in the same threads keep their text, but their stored prompt strings (which
    quote the user) are emptied. Empty conversations go too. The opt-out record, if any, stays:
    it is what keeps the user's future messages out of training data. The user's messages
    and votes waiting in ``spool`` go first, so a running bot cannot store them afterwards.
    """
    spooled = spool.forget_user(platform, user_id, dry_run=dry_run) if spool is not None else 0
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
    counts = ForgetCounts(spooled=spooled)
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
        raise store_error(exc) from exc
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
        raise store_error(exc) from exc
    return counts


__all__ = ["ForgetCounts", "forget_user", "purge_idle"]
