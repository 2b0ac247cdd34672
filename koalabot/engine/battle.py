"""Side-by-side battles: two models answer one message, labelled A and B, side by side.

A battle thread (a battle channel's, or a share of the others: `ModelSet.battle`) answers each
message twice, with the two models the message's key draws in random A/B order. Both answers
are stored as siblings with their model and take 👍/👎 like any answer; B's carries the one
choice (A better, B better, tie, both bad) where the sink can show it. The thread continues
with A until the people who chose prefer B by majority. Each answer is stored with its side, so
the thread's memory (prompt/history.py), `/history` and the export know a battle from the store
alone, judged or not, whatever the battle settings say later. The trade-off: a 🔄 in a battle
thread is stored and voted on, but the thread keeps remembering the battle's answer, not the
retry.

A and B are one turn of the thread (`Answerer.answer_pair`): the thread's next message waits
for both. Where the platform can show two answers at once (Slack, Discord) B's message is posted
under A's and both stream together, so B's words come as soon as A's; the terminal prints one
after the other. The price: two streams edit one thread at once, twice the platform calls for
that moment (their rate limits are waited out by slack_sdk and discord.py as usual).
"""

from __future__ import annotations

import dataclasses
import logging

from koalabot.backend.models import ModelSet
from koalabot.engine.access import AccessPolicy
from koalabot.engine.answer import Answerer
from koalabot.engine.notices import BATTLE_UNKNOWN, NOT_THIS_ANSWER, chose, too_many_votes
from koalabot.engine.votes import shows_answer
from koalabot.errors import AccessDeniedError, RateLimitedError, StoreError
from koalabot.events import AnswerResult, Clicked, ReplySink, ThreadKey
from koalabot.store.judgements import CHOICES, record_judgement
from koalabot.store.repository import Repository

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BattleRule:
    """Which threads fight and with which models (KOALABOT_BATTLE_CHANNELS / _SHARE)."""

    models: ModelSet
    channels: tuple[str, ...]
    share: float

    def sides(self, where: ThreadKey, message_id: int) -> tuple[str, str] | None:
        """The (A, B) models answering stored message ``message_id``, None outside battles."""
        return self.models.battle(where, str(message_id), list(self.channels), self.share)


class Battles:
    """Answers a stored message once, or twice in a battle thread; knows which answer counts."""

    def __init__(
        self, answerer: Answerer, rule: BattleRule, repo: Repository, policy: AccessPolicy
    ) -> None:
        self.answerer = answerer
        self.rule = rule
        self.repo = repo
        self.db = repo.db
        self.policy = policy

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
        return await self.answerer.answer_pair(
            conversation_id, parent_id, where, sink, sides, in_order=in_order
        )

    async def judge(self, a_id: int, b_id: int, user: str, choice: str) -> bool:
        """Store a person's latest choice (a, b, tie, both_bad); False when the two ids are not
        the A and B answers of one battle."""
        a, b = await self.repo.answer(a_id), await self.repo.answer(b_id)
        if a is None or b is None or (a.side, b.side) != ("A", "B"):
            return False
        if a.parent_id is None or a.parent_id != b.parent_id or choice not in CHOICES:
            return False
        await record_judgement(self.db, a_id, b_id, user, choice)
        return True

    async def choose(
        self, a_id: int, b_id: int, user: str, choice: str, clicked: Clicked | None
    ) -> str:
        """A click on a battle's choice: recorded when the clicked message shows one of the two
        answers and the person may vote; the words for the person who chose."""
        try:
            return await self._choose(a_id, b_id, user, choice, clicked)
        except StoreError as exc:
            return exc.user_message

    async def _choose(
        self, a_id: int, b_id: int, user: str, choice: str, clicked: Clicked | None
    ) -> str:
        a, b = await self.repo.answer(a_id), await self.repo.answer(b_id)
        if a is None or b is None or choice not in CHOICES:
            return BATTLE_UNKNOWN
        if not (
            await shows_answer(self.repo, a, clicked) or await shows_answer(self.repo, b, clicked)
        ):
            log.info("battle choice on %d/%d from another message refused", a_id, b_id)
            return NOT_THIS_ANSWER
        try:
            self.policy.check_place(a.where, user)
            self.policy.check_rate(a.where.platform, user, "votes")
        except AccessDeniedError as exc:
            return exc.user_message
        except RateLimitedError as exc:
            return too_many_votes(exc)
        if not await self.judge(a_id, b_id, user, choice):
            return BATTLE_UNKNOWN
        log.info("battle choice %s on answers %d/%d", choice, a_id, b_id)
        return chose(choice)


__all__ = ["BattleRule", "Battles"]
