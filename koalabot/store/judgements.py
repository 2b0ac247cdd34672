"""Side-by-side battle judgements: one person's latest choice between two answers.

A choice is stored per (answer A, answer B, person) and replaced when the person chooses again,
like a vote. Both answers answer the same user message; which one the thread continues with is
the engine's business, not the store's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, Select, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from koalabot.store.database import Database
from koalabot.store.errors import store_error
from koalabot.store.models import Judgement, Message, utcnow

T = TypeVar("T")

#: a is better, b is better, tie, both bad (the values of stats.compare.Outcome).
CHOICES = frozenset({"a", "b", "tie", "both_bad"})


@dataclass(frozen=True)
class JudgementRecord:
    """A person's latest choice between answers ``a_id`` and ``b_id``."""

    a_id: int
    b_id: int
    user: str
    choice: str


async def record_judgement(db: Database, a_id: int, b_id: int, user: str, choice: str) -> None:
    """Store ``user``'s choice, replacing their earlier one on the same pair."""
    if choice not in CHOICES:
        raise ValueError(f"unknown battle choice {choice!r}")
    now = utcnow()
    insert = pg_insert if db.dialect == "postgresql" else sqlite_insert
    stmt = insert(Judgement).values(
        a_id=a_id, b_id=b_id, user=user, choice=choice, created_at=now, updated_at=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["a_id", "b_id", "user"], set_={"choice": choice, "updated_at": now}
    )
    await _run(db, lambda conn: conn.execute(stmt))


async def judgements_on(db: Database, answer_ids: Sequence[int]) -> list[JudgementRecord]:
    """Every judgement of a battle one of ``answer_ids`` fought in, oldest first."""
    j = Judgement
    query = (
        select(j.a_id, j.b_id, j.user, j.choice)
        .where(or_(j.a_id.in_(answer_ids), j.b_id.in_(answer_ids)))
        .order_by(j.id)
    )
    rows = await _run(db, lambda conn: conn.execute(query).all())
    return [JudgementRecord(int(r[0]), int(r[1]), r[2], r[3]) for r in rows]


def judged_conversations() -> Select[Any]:
    """The conversations holding a judged battle (the export reads them as voted ones)."""
    return select(Message.conversation_id).join(Judgement, Judgement.a_id == Message.id)


async def _run(db: Database, work: Callable[[Connection], T]) -> T:
    try:
        return await db.run(work)
    except SQLAlchemyError as exc:
        raise store_error(exc) from exc


__all__ = [
    "CHOICES",
    "JudgementRecord",
    "judged_conversations",
    "judgements_on",
    "record_judgement",
]
