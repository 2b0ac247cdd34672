"""The votes on each answer as the export's thread query reads them: totals of up- and
down-votes, and each vote on its own (who, which way, when) for the rare answers whose identical
text is voted both ways and must be decided person by person.

Each vote on its own travels as one string per answer (`BALLOT_FIELD` between a vote's fields,
`BALLOT_END` between votes), built by the database: one column rather than a row per vote keeps
the query one row per message, and only the few answers that need them are ever parsed
(`ballots`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    String,
    case,
    cast,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.orm import aliased

from koalabot.store.models import Conversation, Feedback, Message
from koalabot.store.times import as_utc

if TYPE_CHECKING:
    from datetime import datetime

    from koalabot.store.threads import ThreadScope

#: Between the fields of one vote, and between votes (control characters no id holds).
BALLOT_FIELD = "\x1f"
BALLOT_END = "\x1e"


class Ballot(NamedTuple):
    """One person's current vote on one answer."""

    user: str
    rating: int
    #: When the vote was last cast or changed.
    at: datetime


def ballots(stored: str) -> list[Ballot]:
    """The votes of an answer's ``ballots`` column."""
    found: list[Ballot] = []
    for vote in stored.split(BALLOT_END):
        rating, at, user = vote.split(BALLOT_FIELD, 2)
        found.append(Ballot(user, int(rating), as_utc(at)))
    return found


def conversation_filters(c: Any, scope: ThreadScope) -> list[ColumnElement[bool]]:
    """The scope's platform, channel and time filters on conversation table ``c``."""
    filters: list[ColumnElement[bool]] = []
    if scope.platform is not None:
        filters.append(c.platform == scope.platform)
    if scope.channel is not None:  # a Discord thread is in the channel it was opened from
        filters.append(or_(c.channel == scope.channel, c.parent == scope.channel))
    if scope.until is not None:
        filters.append(c.created_at < scope.until)
    return filters


def _ballot(f: Any, dialect: str) -> Any:
    """One vote as text: rating, time and user between `BALLOT_FIELD`s."""
    # SQLite keeps times as text already; PostgreSQL's cast gives ISO 8601 with an offset.
    at = type_coerce(f.updated_at, String) if dialect == "sqlite" else cast(f.updated_at, String)
    sep = literal(BALLOT_FIELD, String)
    return cast(f.rating, String) + sep + at + sep + f.user


def _joined(votes: Any, dialect: str) -> Any:
    """The aggregate of votes as text, `BALLOT_END` between them (a plain bound separator:
    SQLAlchemy's ``aggregate_strings`` renders it for execution only, not for a SQL text)."""
    join = func.group_concat if dialect == "sqlite" else func.string_agg
    return join(votes, literal(BALLOT_END, String))


def _vote_totals(scope: ThreadScope, dialect: str) -> Any:
    """Per answer: all up-votes and down-votes, and its votes as text (opted-out voters are taken
    off in Python)."""
    f = Feedback
    query = select(
        f.message_id.label("message_id"),
        func.sum(case((f.rating > 0, 1), else_=0)).label("up"),
        func.sum(case((f.rating < 0, 1), else_=0)).label("down"),
        _joined(_ballot(f, dialect), dialect).label("ballots"),
    )
    if scope.platform is not None or scope.channel is not None:
        fm, fc = aliased(Message), aliased(Conversation)
        query = (
            query.join(fm, fm.id == f.message_id)
            .join(fc, fc.id == fm.conversation_id)
            .where(*conversation_filters(fc, scope))
        )
    return query.group_by(f.message_id).subquery("votes")


class Votes(NamedTuple):
    """Each message's up-votes, down-votes and votes as text, whether it has any, and the table
    of vote totals to join (None where they are looked up per message)."""

    up: Any
    down: Any
    ballots: Any
    voted: Any
    table: Any


def message_votes(scope: ThreadScope, dialect: str, lazy: bool = False) -> Votes:
    """The columns of `Message`'s votes for the thread query on ``dialect`` (``lazy``, SQLite
    only: no votes as text, to be looked up with `SQLITE_BALLOTS`)."""
    m = Message
    if dialect != "sqlite":
        votes = _vote_totals(scope, dialect)
        up, down = func.coalesce(votes.c.up, 0), func.coalesce(votes.c.down, 0)
        return Votes(up, down, votes.c.ballots, votes.c.message_id.is_not(None), votes)
    # Each answer's votes looked up through feedback's (message_id, user) index: on SQLite that
    # costs less than grouping every vote into a table first, and nothing is built up before the
    # first row streams.
    f = aliased(Feedback)
    up_: Any = select(func.count()).where(f.message_id == m.id, f.rating > 0)
    down_: Any = select(func.count()).where(f.message_id == m.id, f.rating < 0)
    voted = exists().where(f.message_id == m.id)
    if lazy:
        return Votes(up_.scalar_subquery(), down_.scalar_subquery(), null(), voted, None)
    text: Any = select(_joined(_ballot(f, dialect), dialect)).where(f.message_id == m.id)
    return Votes(
        up_.scalar_subquery(), down_.scalar_subquery(), text.scalar_subquery(), voted, None
    )


#: One answer's votes as text on a SQLite file, for `Thread.ballots_of`: the few answers that
#: need them are looked up one by one rather than every answer's read with the thread (which
#: cost the thread query a sixth more).
SQLITE_BALLOTS = (
    'SELECT group_concat(CAST(rating AS TEXT) || char(31) || updated_at || char(31) || "user",'
    " char(30)) FROM feedback WHERE message_id = ?"
)


__all__ = [
    "BALLOT_END",
    "BALLOT_FIELD",
    "SQLITE_BALLOTS",
    "Ballot",
    "Votes",
    "ballots",
    "conversation_filters",
    "message_votes",
]
