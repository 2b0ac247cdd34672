"""What `koalabot stats` reads: answers, votes and user messages counted by platform, channel,
model and day, grouped in SQL so only the cells reach Python (a year of traffic is a few thousand
rows, however many messages).

Days are UTC days: PostgreSQL converts its timestamps to UTC first, SQLite stores UTC already.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, Date, case, cast, func, select
from sqlalchemy.exc import SQLAlchemyError

from koalabot.store.database import Database
from koalabot.store.errors import store_error
from koalabot.store.models import Conversation, Feedback, Generation, Message


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


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


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
    db: Database,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
) -> list[StatsCell]:
    """Answers and their votes grouped by platform, channel, model and day (all votes count;
    only ``model``'s answers when given)."""
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
    named = func.coalesce(m.model, g.model_id)  # the KOALABOT_MODELS name where there is one
    filters = [m.role == "assistant", *_time_filters(m.created_at, since, until)]
    if model is not None:
        filters.append(named == model)
    query = (
        select(
            c.platform,
            c.channel,
            named,
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
        .where(*filters)
        .group_by(c.platform, c.channel, named, day)
    )
    try:
        async with db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
    except SQLAlchemyError as exc:
        raise store_error(exc) from exc
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
        raise store_error(exc) from exc
    return [UserMessageCell(r[0], r[1], _as_date(r[2]), r[3], r[4]) for r in rows]


__all__ = ["StatsCell", "UserMessageCell", "answer_stats", "user_message_stats"]
