"""Side-by-side battles: two models answer one message, labelled A and B, one after the other.

A battle thread (a battle channel's, or a share of the others: `ModelSet.battle`) answers each
message twice, with the two models the message's key draws in random A/B order. Both answers
are stored as siblings with their model and take 👍/👎 like any answer; B's carries the one
choice (A better, B better, tie, both bad) where the sink can show it. The thread continues
with A until the people who chose prefer B by majority: the prompt takes each message's first
answer not judged out (`AnswerChoice`). The trade-off: a 🔄 in a battle thread is stored and
voted on, but the thread keeps remembering the battle's answer, not the retry.

A and B are sequential rather than concurrent: one turn of the thread at a time keeps the
per-thread lock's meaning (one answer streaming per thread), and B's words come a model's
answer later than they could.
"""

from __future__ import annotations

import dataclasses

from koalabot.backend.models import ModelSet
from koalabot.engine.answer import Answerer
from koalabot.events import AnswerResult, ReplySink, ThreadKey
from koalabot.prompt.history import LATEST, AnswerChoice
from koalabot.store.battles import judged_out
from koalabot.store.database import Database


@dataclasses.dataclass(frozen=True)
class BattleRule:
    """Which threads fight and with which models (KOALABOT_BATTLE_CHANNELS / _SHARE)."""

    models: ModelSet
    channels: tuple[str, ...]
    share: float

    def sides(self, where: ThreadKey, message_id: int) -> tuple[str, str] | None:
        """The (A, B) models answering stored message ``message_id``, None outside battles."""
        return self.models.battle(where, str(message_id), list(self.channels), self.share)

    def fights(self, where: ThreadKey) -> bool:
        return self.sides(where, 0) is not None


class Battles:
    """Answers a stored message once, or twice in a battle thread; knows which answer counts."""

    def __init__(self, answerer: Answerer, rule: BattleRule, db: Database) -> None:
        self.answerer = answerer
        self.rule = rule
        self.db = db
        answerer.choosing = self.choice

    async def choice(self, conversation_id: int, where: ThreadKey) -> AnswerChoice:
        """Which answers the thread's prompt takes: the latest, or in a battle thread each
        message's first answer that did not lose its battle."""
        if not self.rule.fights(where):
            return LATEST
        return AnswerChoice(await judged_out(self.db, conversation_id), first=True)

    async def answer(
        self,
        conversation_id: int,
        parent_id: int,
        where: ThreadKey,
        sink: ReplySink,
        *,
        in_order: bool = False,
    ) -> AnswerResult:
        """Answer ``parent_id``; in a battle, A's result with B's as its ``rival``."""
        sides = self.rule.sides(where, parent_id)
        if sides is None:
            return await self.answerer.answer(
                conversation_id, parent_id, where, sink, in_order=in_order
            )
        a = await self.answerer.answer(
            conversation_id, parent_id, where, sink, in_order=in_order, model=sides[0], label="A"
        )
        if a.status != "ok" or a.answer_id is None:
            return a
        b = await self.answerer.answer(
            conversation_id, parent_id, where, sink, model=sides[1], label="B", rival=a.answer_id
        )
        return dataclasses.replace(a, rival=b)


__all__ = ["BattleRule", "Battles"]
