"""What `koalabot stats --models` reads: votes per model and day, and battle judgements with the
two models that fought, grouped in SQL so only the cells reach Python.

Approval here counts votes (each 👍 and each 👎 once), not answers by their net vote: that is
the binomial the Wilson interval is about. A battle is one person's latest choice between the two
answers of one pair (the `judgements` table keeps one row per pair and person).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Executable, case, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import aliased

from koalabot.store.database import Database
from koalabot.store.errors import store_error
from koalabot.store.models import Feedback, Generation, Judgement, Message
from koalabot.store.stats import _as_date, _day, _time_filters


@dataclass(frozen=True)
class ModelDay:
    """One model's answers and the votes on them, for one UTC day."""

    model: str | None
    day: date
    answers: int
    up: int
    down: int


@dataclass(frozen=True)
class JudgedPair:
    """One person's latest choice in a battle: a, b, tie or bad (both bad)."""

    a_model: str | None
    b_model: str | None
    choice: str


async def model_days(
    db: Database,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
) -> list[ModelDay]:
    """Answers and votes per model and day (only ``model``'s when given)."""
    m, f, g = Message, Feedback, Generation
    named = func.coalesce(m.model, g.model_id)  # answers stored before `model` had a record
    votes = (
        select(
            f.message_id.label("message_id"),
            func.sum(case((f.rating > 0, 1), else_=0)).label("up"),
            func.sum(case((f.rating < 0, 1), else_=0)).label("down"),
        )
        .group_by(f.message_id)
        .subquery("votes")
    )
    day = _day(db, m.created_at).label("day")
    filters = [m.role == "assistant", *_time_filters(m.created_at, since, until)]
    if model is not None:
        filters.append(named == model)
    query = (
        select(
            named,
            day,
            func.count(m.id),
            func.coalesce(func.sum(votes.c.up), 0),
            func.coalesce(func.sum(votes.c.down), 0),
        )
        .outerjoin(g, g.message_id == m.id)
        .outerjoin(votes, votes.c.message_id == m.id)
        .where(*filters)
        .group_by(named, day)
    )
    rows = await _all(db, query)
    return [ModelDay(r[0], _as_date(r[1]), r[2], int(r[3]), int(r[4])) for r in rows]


async def judged_pairs(
    db: Database,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
) -> list[JudgedPair]:
    """Every battle judgement with its two models (those ``model`` fought in, when given)."""
    j, a, b = Judgement, aliased(Message), aliased(Message)
    ga, gb = aliased(Generation), aliased(Generation)
    a_model, b_model = func.coalesce(a.model, ga.model_id), func.coalesce(b.model, gb.model_id)
    filters = _time_filters(a.created_at, since, until)
    if model is not None:
        filters.append((a_model == model) | (b_model == model))
    query = (
        select(a_model, b_model, j.choice)
        .join(a, a.id == j.a_id)
        .join(b, b.id == j.b_id)
        .outerjoin(ga, ga.message_id == a.id)
        .outerjoin(gb, gb.message_id == b.id)
        .where(*filters)
    )
    return [JudgedPair(r[0], r[1], r[2]) for r in await _all(db, query)]


async def _all(db: Database, query: Executable) -> list[Any]:
    try:
        async with db.engine.connect() as conn:
            return list((await conn.execute(query)).all())
    except SQLAlchemyError as exc:
        raise store_error(exc) from exc


__all__ = ["JudgedPair", "ModelDay", "judged_pairs", "model_days"]
