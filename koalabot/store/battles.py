"""Which answers side-by-side battles passed over: the judgements of one thread, or of a set of
answers, turned into (chosen, rejected) preferences.

Each person's latest choice counts once; a pair of answers becomes one preference when more
people chose one side than the other. Ties and "both bad" say nothing about which answer is
better and are skipped, as is a pair whose people are split evenly: the thread then continues
with A, and the export has no pair to train on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select

from koalabot.store.database import Database
from koalabot.store.judgements import JudgementRecord, _run, judgements_on
from koalabot.store.models import Conversation, Judgement, Message
from koalabot.store.threads import is_opted_out


def battle_pairs(judgements: Iterable[JudgementRecord]) -> list[tuple[int, int]]:
    """(chosen id, rejected id) per battle with a majority, in the order battles were judged."""
    sides: dict[tuple[int, int], Counter[str]] = {}
    for j in judgements:
        sides.setdefault((j.a_id, j.b_id), Counter())[j.choice] += 1
    pairs = []
    for (a, b), count in sides.items():
        if count["a"] > count["b"]:
            pairs.append((a, b))
        elif count["b"] > count["a"]:
            pairs.append((b, a))
    return pairs


async def judged_out(db: Database, conversation_id: int) -> frozenset[int]:
    """The answers of a thread that lost their battle: the thread's memory leaves them out."""
    j = Judgement
    query = (
        select(j.a_id, j.b_id, j.user, j.choice)
        .join(Message, Message.id == j.a_id)
        .where(Message.conversation_id == conversation_id)
        .order_by(j.id)
    )
    rows = await _run(db, lambda conn: conn.execute(query).all())
    judged = [JudgementRecord(int(r[0]), int(r[1]), r[2], r[3]) for r in rows]
    return frozenset(rejected for _, rejected in battle_pairs(judged))


async def preferences(db: Database, answer_ids: Sequence[int]) -> list[tuple[int, int]]:
    """(chosen id, rejected id) of every battle among ``answer_ids`` with a majority."""
    if not answer_ids:
        return []
    wanted = set(answer_ids)
    judged = await judgements_on(db, list(wanted))
    return [p for p in battle_pairs(judged) if wanted.issuperset(p)]


@dataclass(frozen=True)
class ThreadBattles:
    """One thread's judged battles, as plain ids for the export."""

    #: (chosen id, rejected id) per battle with a majority, no opted-out person's choice counted.
    pairs: tuple[tuple[int, int], ...]
    #: The answers that lost, as the thread's memory has them (`judged_out`: every choice); its
    #: question's thread continues with the other side (as prompt/history.py's `_turns`).
    lost: frozenset[int]


async def thread_battles(
    db: Database, optout_users: Collection[str] = ()
) -> dict[int, ThreadBattles]:
    """Per conversation, its judged battles; ``optout_users`` (as for `stream_threads`) do not
    count towards the pairs to train on."""
    j = Judgement
    query = (
        select(Message.conversation_id, Conversation.platform, j.a_id, j.b_id, j.user, j.choice)
        .join(Message, Message.id == j.a_id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .order_by(j.id)
    )
    rows = await _run(db, lambda conn: conn.execute(query).all())
    judged: dict[int, list[tuple[str, JudgementRecord]]] = {}
    for conversation, platform, a, b, user, choice in rows:
        record = JudgementRecord(a, b, user, choice)
        judged.setdefault(conversation, []).append((platform, record))
    return {c: _battles(records, optout_users) for c, records in judged.items()}


def _battles(
    judged: list[tuple[str, JudgementRecord]], optout_users: Collection[str]
) -> ThreadBattles:
    counted = [r for platform, r in judged if not is_opted_out(platform, r.user, optout_users)]
    records = [r for _, r in judged]
    return ThreadBattles(
        pairs=tuple(battle_pairs(counted)),
        lost=frozenset(rejected for _, rejected in battle_pairs(records)),
    )


__all__ = [
    "ThreadBattles",
    "battle_pairs",
    "judged_out",
    "preferences",
    "thread_battles",
]
