"""The feedback path: one person's 👍/👎 on one answer, recorded, replaced or removed.

A vote names its answer by id (a button) or by the platform message it was put on (a reaction);
either way it counts only on an assistant message of the same platform, and bots' votes never
count. When the store cannot take a vote it is kept in the spool (if there is one) and recorded,
in the order votes were cast, once the store is back: a person's latest vote wins.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from koalabot.engine.backlog import Backlog
from koalabot.errors import StoreError, StoreRefusedError
from koalabot.events import FeedbackEvent, FeedbackResult
from koalabot.metrics import Metrics
from koalabot.store.repository import AnswerInfo, Repository
from koalabot.store.spool import SpoolError

log = logging.getLogger(__name__)


class Votes:
    """Votes into the store (or into the spool while the store is away)."""

    def __init__(self, repo: Repository, metrics: Metrics, backlog: Backlog | None) -> None:
        self.repo = repo
        self.metrics = metrics
        self.backlog = backlog

    async def handle(self, ev: FeedbackEvent) -> FeedbackResult:
        """Record, replace or remove one person's vote on one answer."""
        if ev.is_bot:
            return FeedbackResult(False, reason="votes by bots do not count")
        arrived = datetime.now(UTC)
        try:
            if self.backlog is not None:
                # Votes kept while the store was down go first: a person's latest vote wins.
                async with self.backlog.before_vote():
                    return await self.record(ev)
            return await self.record(ev)
        except StoreRefusedError as exc:  # kept, it would fail again
            log.warning("the database refused a vote: %s", exc.__cause__.__class__.__name__)
            return FeedbackResult(False, reason="refused by the database")
        except StoreError:
            log.exception("could not store a vote")
            return self._keep(ev, arrived)

    async def record(self, ev: FeedbackEvent, at: datetime | None = None) -> FeedbackResult:
        """Record the vote (cast ``at``, if not now) on the answer it names. Raises StoreError."""
        info = await self._answer_voted_on(ev)
        if info is None or info.role != "assistant" or info.where.platform != ev.platform:
            log.info("vote on a message that is not an answer ignored (%s)", ev)
            return FeedbackResult(False, reason="not an answer")
        rating = 1 if ev.rating > 0 else -1
        if ev.removed:
            removed = await self.repo.unvote(info.id, ev.user, rating)
            reason = "removed" if removed else "no vote"
            return FeedbackResult(removed, info.id, 0, reason, where=info.where)
        await self.repo.vote(info.id, ev.user, rating, at=at)
        self.metrics.votes.labels("+1" if rating > 0 else "-1").inc()
        log.info("vote %+d on answer %d", rating, info.id)
        return FeedbackResult(True, info.id, rating, where=info.where)

    async def _answer_voted_on(self, ev: FeedbackEvent) -> AnswerInfo | None:
        answer_id = ev.answer_id
        if answer_id is None and ev.channel and ev.platform_message_id:
            answer_id = await self.repo.answer_by_ref(
                ev.platform, ev.channel, ev.platform_message_id
            )
        return await self.repo.answer(answer_id) if answer_id is not None else None

    def _keep(self, ev: FeedbackEvent, arrived: datetime) -> FeedbackResult:
        """The store failed to take a vote: keep it in the spool, to be recorded later."""
        failed = FeedbackResult(False, reason="store unavailable")
        if self.backlog is None:
            return failed
        try:
            self.backlog.keep_vote(ev, arrived)
        except SpoolError as exc:
            log.error("%s", exc)
            return failed
        self.backlog.start()
        rating = 0 if ev.removed else (1 if ev.rating > 0 else -1)
        return FeedbackResult(
            False, ev.answer_id, rating, "kept until the database is back", kept=True
        )


__all__ = ["Votes"]
