"""The SQL behind `koalabot review`: rated answers page by page, with their threads, votes and
generation summaries, and the decisions people make about them.

Everything leaves this module as the plain records of review_records.py (re-exported here), so
the web app needs no SQLAlchemy.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from koalabot.errors import KoalabotError, StoreError
from koalabot.store.database import Database
from koalabot.store.models import (
    REASONS,
    WITHHELD_REASONS,
    Conversation,
    Decision,
    Feedback,
    Generation,
    Message,
    Review,
    utcnow,
)
from koalabot.store.review_records import (
    COUNT_LIMIT,
    ContextMessage,
    Facets,
    Filters,
    GenerationSummary,
    RatedAnswer,
    Rating,
    ReviewPage,
    ReviewRecord,
    State,
    Vote,
)
from koalabot.store.times import as_utc

#: Answers on one page of the review list.
PAGE_SIZE = 20


class ReviewError(KoalabotError):
    """A review decision cannot be stored as asked (unknown answer, reason or decision)."""


class AnswerNotFoundError(ReviewError):
    """No rated answer has this id."""


# --- queries ---------------------------------------------------------------------------------


def _store_error(exc: BaseException) -> StoreError:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return StoreError(f"database error: {reason[0] if reason else type(exc).__name__}")


def _net_votes() -> Any:
    """Per answer row: the sum of its ratings (±1 each), NULL when nobody voted.

    A correlated subquery on the feedback index, so a page of the newest answers reads only
    their own votes, never every vote in the store.
    """
    f = aliased(Feedback)
    return select(func.sum(f.rating)).where(f.message_id == Message.id).scalar_subquery()


def _state_filter(state: State) -> ColumnElement[bool]:
    decision = Review.decision
    return {
        State.UNREVIEWED: decision.is_(None),
        State.REVIEWED: decision.is_not(None),
        State.INCLUDED: decision == Decision.INCLUDE.value,
        State.EXCLUDED: decision == Decision.EXCLUDE.value,
        State.CORRECTED: decision == Decision.CORRECT.value,
    }[state]


def _listing(filters: Filters) -> Select[*tuple[Any, ...]]:
    """Rated answers within the filters (the columns RatedAnswer needs, in its order)."""
    m, c, g, r = Message, Conversation, Generation, Review
    net = _net_votes()
    where: list[ColumnElement[bool]] = [m.role == "assistant", net.is_not(None)]
    if filters.platform:
        where.append(c.platform == filters.platform)
    if filters.channel:  # a Discord thread is in the channel it was opened from
        where.append(or_(c.channel == filters.channel, c.parent == filters.channel))
    if filters.model:
        where.append(g.model_id == filters.model)
    if filters.since is not None:
        where.append(m.created_at >= filters.since)
    if filters.until is not None:
        where.append(m.created_at < filters.until)
    if filters.rating is Rating.LIKED:
        where.append(net > 0)
    elif filters.rating is Rating.DISLIKED:
        where.append(net < 0)
    elif filters.rating is Rating.SPLIT:
        where.append(net == 0)
    if filters.state is not None:
        where.append(_state_filter(filters.state))
    return (
        select(
            m.id,
            c.platform,
            c.workspace,
            c.channel,
            c.thread,
            m.conversation_id,
            m.parent_id,
            m.status,
            m.text,
            m.created_at,
            g.template,
            g.parameters,
            g.model_id,
            g.endpoint,
            g.prompt_tokens,
            g.completion_tokens,
            g.finish_reason,
            g.time_to_first_token,
            g.total_time,
            g.dropped_turns,
            r.decision,
            r.reason,
            r.correction,
            r.reviewer,
            r.decided_at,
        )
        .join(c, c.id == m.conversation_id)
        .outerjoin(g, g.message_id == m.id)
        .outerjoin(r, r.message_id == m.id)
        .where(*where)
    )


def _item(row: Sequence[Any]) -> RatedAnswer:
    generation = None
    if row[10] is not None:
        generation = GenerationSummary(
            template=row[10],
            parameters=dict(row[11] or {}),
            model_id=row[12],
            endpoint=row[13],
            prompt_tokens=row[14],
            completion_tokens=row[15],
            finish_reason=row[16],
            time_to_first_token=row[17],
            total_time=row[18],
            dropped_turns=row[19] or 0,
        )
    review = None
    if row[20] is not None:
        review = ReviewRecord(Decision(row[20]), row[21], row[22], row[23], as_utc(row[24]))
    return RatedAnswer(
        id=row[0],
        platform=row[1],
        workspace=row[2],
        channel=row[3],
        thread=row[4],
        conversation_id=row[5],
        parent_id=row[6],
        status=row[7],
        text=row[8],
        created_at=as_utc(row[9]),
        generation=generation,
        review=review,
    )


async def _fill(conn: AsyncConnection, items: list[RatedAnswer]) -> None:
    """Add each item's votes and its thread up to the answer (as the model was shown it)."""
    if not items:
        return
    ids = [item.id for item in items]
    votes: dict[int, list[Vote]] = defaultdict(list)
    rows = await conn.execute(
        select(Feedback.message_id, Feedback.user, Feedback.rating, Feedback.reason)
        .add_columns(Feedback.updated_at)
        .where(Feedback.message_id.in_(ids))
        .order_by(Feedback.updated_at, Feedback.id)
    )
    for message_id, user, rating, reason, updated_at in rows:
        votes[message_id].append(Vote(user, rating, reason, as_utc(updated_at)))
    last = max(ids)
    m = Message
    thread_rows = await conn.execute(
        select(m.id, m.conversation_id, m.role, m.author, m.text, m.status, m.parent_id)
        .add_columns(m.created_at)
        .where(
            m.conversation_id.in_({item.conversation_id for item in items}),
            m.id < last,
            (m.role == "user") | (m.status == "ok"),
        )
        .order_by(m.conversation_id, m.id)
    )
    threads: dict[int, list[Any]] = defaultdict(list)
    for row in thread_rows:
        threads[row[1]].append(row)
    for item in items:
        item.votes = votes[item.id]
        item.context = _context(threads[item.conversation_id], item)


def _context(rows: list[Any], answer: RatedAnswer) -> list[ContextMessage]:
    """The user messages up to the one answered, each followed by the answer to it shown last
    before this answer was written (the rule `koalabot export` builds threads by)."""
    asked: list[ContextMessage] = []
    shown: dict[int, ContextMessage] = {}
    for msg_id, _conv, role, author, text, _status, parent_id, created_at in rows:
        if msg_id >= answer.id:
            break
        message = ContextMessage(msg_id, role, author, text, as_utc(created_at))
        if role == "user":
            asked.append(message)
        elif parent_id is not None:
            shown[parent_id] = message
    out: list[ContextMessage] = []
    for question in asked:
        out.append(question)
        if question.id == answer.parent_id:
            break
        if question.id in shown:
            out.append(shown[question.id])
    return out


async def list_answers(
    db: Database,
    filters: Filters = Filters(),
    *,
    before: int | None = None,
    after: int | None = None,
    limit: int = PAGE_SIZE,
    count_limit: int = COUNT_LIMIT,
) -> ReviewPage:
    """A page of rated answers, newest first: the first page, the one older than answer
    ``before``, or the one newer than answer ``after``."""
    query = _listing(filters)
    m = Message
    if after is not None:
        page_query = query.where(m.id > after).order_by(m.id.asc()).limit(limit + 1)
    else:
        if before is not None:
            query = query.where(m.id < before)
        page_query = query.order_by(m.id.desc()).limit(limit + 1)
    matches = _listing(filters).with_only_columns(m.id).limit(count_limit + 1)
    total_query = select(func.count()).select_from(matches.subquery())
    try:
        async with db.engine.connect() as conn:
            rows = list((await conn.execute(page_query)).all())
            total = int(await conn.scalar(total_query) or 0)
            more = len(rows) > limit
            items = [_item(row) for row in rows[:limit]]
            if after is not None:
                items.reverse()
            await _fill(conn, items)
    except SQLAlchemyError as exc:
        raise _store_error(exc) from exc
    first, last = (items[0].id, items[-1].id) if items else (None, None)
    if after is not None:
        newer, older = (first if more else None), last
    else:
        newer, older = (first if before is not None else None), (last if more else None)
    return ReviewPage(items, total, newer, older, count_limit)


async def get_answer(db: Database, answer_id: int) -> RatedAnswer:
    """One rated answer, as a page shows it."""
    query = _listing(Filters()).where(Message.id == answer_id)
    try:
        async with db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
            if row is None:
                raise AnswerNotFoundError(f"no rated answer has id {answer_id}")
            item = _item(row)
            await _fill(conn, [item])
    except SQLAlchemyError as exc:
        raise _store_error(exc) from exc
    return item


async def facets(db: Database) -> Facets:
    """Platforms, channels and models in the store: what the filters can pick from."""
    c, g = Conversation, Generation
    channels = select(c.platform, c.channel).distinct()
    models = select(g.model_id).where(g.model_id.is_not(None)).distinct()
    try:
        async with db.engine.connect() as conn:
            pairs = sorted((p, ch) for p, ch in (await conn.execute(channels)).all())
            names = sorted(n for n in (await conn.scalars(models)).all() if n is not None)
    except SQLAlchemyError as exc:
        raise _store_error(exc) from exc
    return Facets(
        platforms=sorted({platform for platform, _ in pairs}),
        channels=pairs,
        models=names,
    )


def _validated(
    decision: Decision, reason: str | None, correction: str | None
) -> tuple[str | None, str | None]:
    if decision is Decision.EXCLUDE:
        if reason not in REASONS:
            known = ", ".join(REASONS)
            raise ReviewError(f"excluding needs a reason, one of: {known} (got {reason!r})")
        return reason, None
    if decision is Decision.CORRECT:
        if correction is None or not correction.strip():
            raise ReviewError("a correction needs the answer it should have given")
        return None, correction.strip()
    return None, None


async def decide(
    db: Database,
    answer_id: int,
    decision: Decision,
    *,
    reviewer: str,
    reason: str | None = None,
    correction: str | None = None,
) -> ReviewRecord:
    """Store (or replace) the decision on a rated answer, with who made it and when."""
    reason, correction = _validated(decision, reason, correction)
    now = utcnow()
    values = {
        "decision": decision.value,
        "reason": reason,
        "correction": correction,
        "reviewer": reviewer,
        "decided_at": now,
    }
    insert = pg_insert(Review) if db.dialect == "postgresql" else sqlite_insert(Review)
    stmt = insert.values(message_id=answer_id, **values).on_conflict_do_update(
        index_elements=[Review.message_id], set_=values
    )
    rated = select(Feedback.id).where(Feedback.message_id == answer_id).limit(1)
    try:
        async with db.engine.begin() as conn:
            if await conn.scalar(rated) is None:
                raise AnswerNotFoundError(f"no rated answer has id {answer_id}")
            await conn.execute(stmt)
    except SQLAlchemyError as exc:
        raise _store_error(exc) from exc
    return ReviewRecord(decision, reason, correction, reviewer, now)


async def undo(db: Database, answer_id: int) -> bool:
    """Forget the decision on an answer (back to unreviewed); False if it had none."""
    try:
        async with db.engine.begin() as conn:
            result = await conn.execute(delete(Review).where(Review.message_id == answer_id))
    except SQLAlchemyError as exc:
        raise _store_error(exc) from exc
    return bool(result.rowcount)


__all__ = [
    "COUNT_LIMIT",
    "PAGE_SIZE",
    "REASONS",
    "WITHHELD_REASONS",
    "AnswerNotFoundError",
    "ContextMessage",
    "Decision",
    "Facets",
    "Filters",
    "GenerationSummary",
    "RatedAnswer",
    "Rating",
    "ReviewError",
    "ReviewPage",
    "ReviewRecord",
    "State",
    "Vote",
    "decide",
    "facets",
    "get_answer",
    "list_answers",
    "undo",
]
