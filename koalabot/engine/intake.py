"""A human message from arrival to its turn: who may ask, the message stored before anything
can fail, and the reasons not to answer a stored message (shutting down, no words, too fast).

The store comes first: access is checked before (a denied message is not kept), everything else
after, so a message is never lost because a later step broke. When the store cannot take it,
the message goes to the spool (`backlog`) and the person is told it will be answered; without a
spool they are asked to send it again. A message the database refuses (rather than cannot take)
is never kept: it would fail again and hold its thread up, so the person is asked to resend it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from koalabot.engine.access import AccessPolicy
from koalabot.engine.backlog import Backlog
from koalabot.engine.battle import Battles
from koalabot.engine.notices import EMPTY_MESSAGE, ONLY_ATTACHMENTS, SHUTTING_DOWN, SPOOLED, refuse
from koalabot.engine.orphans import Orphans
from koalabot.errors import AccessDeniedError, RateLimitedError, StoreError, StoreRefusedError
from koalabot.events import AnswerResult, ChatMessage, ReplySink, has_words
from koalabot.store.repository import Repository
from koalabot.store.spool import SpoolError

log = logging.getLogger(__name__)


class Intake:
    """Takes messages in until told to stop (``accepting``), and hands them to the answerer."""

    def __init__(
        self,
        repo: Repository,
        policy: AccessPolicy,
        answerer: Battles,
        orphans: Orphans,
        backlog: Backlog | None,
    ) -> None:
        self.repo = repo
        self.policy = policy
        self.answerer = answerer
        self.orphans = orphans
        self.backlog = backlog
        self.accepting = True

    async def take(self, msg: ChatMessage, sink: ReplySink) -> AnswerResult:
        """Check access, store the message (or keep it for later), then answer it."""
        try:
            self.policy.check_allowed(msg)
        except AccessDeniedError as exc:
            log.info("denied %s user %s in %s", msg.where.platform, msg.user, msg.where.channel)
            return await refuse(sink, "denied", exc.user_message)
        arrived = datetime.now(UTC)
        try:
            stored = await self._store(msg, sink)
        except StoreRefusedError as exc:
            # Kept, it would fail again and hold its thread up: the person is asked instead.
            log.warning("the database refused a message: %s", exc.__cause__.__class__.__name__)
            return await refuse(sink, "refused", exc.user_message)
        except StoreError as exc:
            log.exception("could not store a message")
            return await self._keep_for_later(msg, arrived, sink, exc)
        return await self.answer_stored(msg, sink, stored)

    async def _store(self, msg: ChatMessage, sink: ReplySink) -> tuple[int, int] | None:
        if self.backlog is not None:
            # Earlier messages of this thread wait in the spool: stored first, they keep
            # their place in the thread (and are answered first).
            await self.backlog.before_message(msg.where, sink)
        # The same words again after a failed answer are a retry of it, not a second turn.
        return await self.repo.add_user_message(
            msg.where, msg.user, msg.text, msg.message_id, msg.dedupe_keys, resend_retries=True
        )

    async def answer_stored(
        self, msg: ChatMessage, sink: ReplySink, stored: tuple[int, int] | None
    ) -> AnswerResult:
        """Answer a stored message (``stored``: its conversation and message ids; None for a
        redelivery), unless there is a reason not to."""
        if stored is None:
            log.info("duplicate delivery %s dropped", ",".join(msg.dedupe_keys))
            return AnswerResult("duplicate")
        conversation_id, message_id = stored
        if msg.where in self.orphans:
            await self.orphans.tell(msg.where, sink)
        if not self.accepting:
            return await self._decline(sink, "interrupted", SHUTTING_DOWN, message_id)
        if not has_words(msg.text):
            notice = ONLY_ATTACHMENTS if msg.attachments else EMPTY_MESSAGE
            return await self._decline(sink, "empty", notice, message_id)
        try:
            self.policy.check_rate(msg.where.platform, msg.user)
        except RateLimitedError as exc:
            return await self._decline(sink, "rate_limited", exc.user_message, message_id)
        return await self.answerer.answer(
            conversation_id, message_id, msg.where, sink, in_order=True
        )

    async def _keep_for_later(
        self, msg: ChatMessage, arrived: datetime, sink: ReplySink, failure: StoreError
    ) -> AnswerResult:
        """The store failed to take a message: keep it in the spool, to be answered later."""
        if self.backlog is None:
            return await refuse(sink, "failed", failure.user_message)
        try:
            kept = self.backlog.keep_message(msg, arrived, sink)
        except SpoolError as exc:
            log.error("%s", exc)
            return await refuse(sink, "failed", exc.user_message)
        if not kept:
            log.info("duplicate delivery %s dropped (spooled)", ",".join(msg.dedupe_keys))
            return AnswerResult("duplicate")
        self.backlog.start()
        return await refuse(sink, "spooled", SPOOLED)

    async def _decline(
        self, sink: ReplySink, status: str, notice: str, message_id: int
    ) -> AnswerResult:
        """Refuse a stored message, recorded so its thread does not wait for its answer."""
        try:
            await self.repo.decline(message_id)
        except StoreError:
            log.warning("could not record message %d as declined", message_id)
        return await refuse(sink, status, notice, message_id)


__all__ = ["Intake"]
