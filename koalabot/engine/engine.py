"""The one orchestrator the adapters call: store first, then think, then answer.

Every adapter hands its messages and votes to an Engine. For each message: drop a delivery that
was already taken in, commit the user's message, take the conversation's turn, build the prompt
from the thread's tail within the model's budget, stream the answer into the adapter's reply
sink, and commit the answer with the record of how it was made.

This module is the façade and the process's lifecycle (open, shutdown, close, health); each
step lives in a module of its own: `intake` (a message until its turn), `answer` (the turn),
`turns` (one answer at a time per thread), `votes`, `orphans` (answers a crash cut off),
`backlog` (what was kept while the store was down) and `notices` (what the bot says itself).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

from koalabot.backend import Backend, GenerationParams
from koalabot.backend.models import ModelSet
from koalabot.config import Settings
from koalabot.engine.access import AccessPolicy
from koalabot.engine.answer import Answerer
from koalabot.engine.backlog import Backlog
from koalabot.engine.battle import BattleRule, Battles
from koalabot.engine.inflight import InFlight
from koalabot.engine.intake import Intake
from koalabot.engine.notices import (
    EMPTY_MESSAGE,
    INTERRUPTED,
    NOT_THIS_ANSWER,
    ONLY_ATTACHMENTS,
    OPTED_IN,
    OPTED_OUT,
    SHUTTING_DOWN,
    SPOOLED,
    UNEXPECTED,
    refuse,
)
from koalabot.engine.orphans import Orphans
from koalabot.engine.recovery import SETTLED, Unanswered
from koalabot.engine.turns import ORDER_WAIT, Turns
from koalabot.engine.votes import Votes, shows_answer
from koalabot.errors import AccessDeniedError, RateLimitedError, StoreError
from koalabot.events import (
    AnswerResult,
    ChatMessage,
    Clicked,
    FeedbackEvent,
    FeedbackResult,
    ReplySink,
    Said,
    ThreadKey,
)
from koalabot.metrics import Metrics
from koalabot.prompt.budget import CachedCounter
from koalabot.prompt.history import HistoryPrompter, ThreadPage
from koalabot.prompt.templates import TEMPLATES
from koalabot.store.database import Database, open_database
from koalabot.store.repository import Repository
from koalabot.store.spool import Spool
from koalabot.store.waiting import find_unanswered

log = logging.getLogger(__name__)


class Engine:
    """Turns ChatMessages into stored, streamed answers and FeedbackEvents into votes."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        backend: Backend,
        models: ModelSet | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.backend = backend
        #: Every model that may answer, by name (``backend`` alone without KOALABOT_MODELS).
        self.models = models or ModelSet.single(backend)
        self.repo = Repository(db)
        self.policy = AccessPolicy(settings)
        self.template = TEMPLATES[settings.template]
        self.params = GenerationParams.from_settings(settings, stop=self.template.stop)
        self.counter = CachedCounter(backend)
        self.history = HistoryPrompter(self.repo, self.counter, self.template)
        self.backend_urls = settings.endpoints
        self.metrics = Metrics()
        self._inflight = InFlight()
        self.orphans = Orphans()
        self.unanswered = Unanswered()
        #: Messages and votes that came while the store was unreachable (none kept without a
        #: spool path).
        self.spool = (
            Spool(Path(settings.spool_path), settings.spool_limit) if settings.spool_path else None
        )
        self.backlog = self._backlog(self.spool)
        self.answerer = self._answerer()
        rule = BattleRule(self.models, tuple(settings.battle_channels), settings.battle_share)
        self.battles = Battles(self.answerer, rule, self.repo, self.policy)
        self.intake = Intake(self.repo, self.policy, self.battles, self.orphans, self.backlog)
        self.votes = Votes(self.repo, self.metrics, self.backlog, self.policy)

    def _backlog(self, spool: Spool | None) -> Backlog | None:
        if spool is None:
            return None
        interval = self.settings.spool_retry_interval
        return Backlog(spool, self.repo, self.metrics, interval, self)

    def _answerer(self) -> Answerer:
        # ORDER_WAIT is read here, from this module, so a test can shorten it.
        turns = Turns(self.repo, self.db.dialect, ORDER_WAIT)
        return Answerer(
            self.repo,
            self.backend,
            self.history,
            self.template,
            self.params,
            turns=turns,
            metrics=self.metrics,
            first_notice=self.settings.notice,
            models=self.models,
            show_model=self.settings.show_model,
        )

    @classmethod
    async def open(cls, settings: Settings) -> Engine:
        """Open the store (SQLite upgrades itself) and the backend; recover crashed answers."""
        db = await open_database(settings.database_url, busy_timeout=settings.sqlite_busy_timeout)
        models = ModelSet.from_settings(settings)
        engine = cls(settings, db, models.default, models)
        try:
            await engine.models.check()  # a missing model setting stops the start (one line)
            orphans = await engine.repo.recover_interrupted()
            engine.unanswered = Unanswered(await find_unanswered(db, SETTLED))
        except BaseException:
            await engine.close()
            raise
        engine.orphans.add(orphans)
        if orphans:
            log.warning("marked %d answers left streaming by a crash as interrupted", len(orphans))
        if engine.unanswered:
            log.warning("%d stored messages a crash left unanswered", len(engine.unanswered))
        engine._warn_about_the_spool()
        return engine

    def _warn_about_the_spool(self) -> None:
        if self.spool is not None and (problem := self.spool.problem()):
            log.warning(
                "KOALABOT_SPOOL_PATH=%s cannot be used: %s. Messages sent while the database "
                "is down will not be kept; people will be asked to send them again",
                self.spool.path,
                problem,
            )
        elif self.spool is not None and (waiting := len(self.spool)):
            log.warning(
                "%d messages kept while the database was unreachable (%s) are answered once "
                "their platform connects",
                waiting,
                self.spool.path,
            )

    async def close(self) -> None:
        """Close the backend sessions, the database pool and the spool."""
        if self.backlog is not None:
            await self.backlog.stop()
        if self.spool is not None:
            self.spool.close()
        await self.models.close()
        await self.repo.close()
        await self.db.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def accepting(self) -> bool:
        """Whether new messages are answered (False once the shutdown began)."""
        return self.intake.accepting

    # --- messages ------------------------------------------------------------------------

    async def handle_message(self, msg: ChatMessage, sink: ReplySink) -> AnswerResult:
        """Store, then answer one human message in its thread."""
        self.metrics.received.labels(msg.where.platform).inc()
        result = await self._tracked(self.intake.take(msg, sink))
        self._count(msg.where.platform, result)
        return result

    async def regenerate(
        self, answer_id: int, user: str, sink: ReplySink, clicked: Clicked | None = None
    ) -> AnswerResult:
        """Another answer to the same user message, as a sibling both can be voted on.

        ``clicked`` is the message the 🔄 was on: unless it shows that answer (the terminal has
        none), nothing happens and the result's notice is for the clicker's eyes only.
        """
        try:
            info = await self.repo.answer(answer_id)
            shown = info is not None and await shows_answer(self.repo, info, clicked)
        except StoreError as exc:
            return await refuse(sink, "failed", exc.user_message)
        if info is None or info.role != "assistant" or info.parent_id is None:
            log.info("regenerate of unknown answer %s ignored", answer_id)
            return AnswerResult("unknown")
        if not shown:
            log.info("regenerate of answer %d from another message refused", info.id)
            return AnswerResult("not_this_answer", notice=NOT_THIS_ANSWER)
        probe = ChatMessage(info.where, user, "", "")
        try:
            self.policy.check_allowed(probe)
            self.policy.check_rate(info.where.platform, user)
        except (AccessDeniedError, RateLimitedError) as exc:
            return await refuse(sink, "denied", exc.user_message)
        cross = self.settings.cross_model_retry
        model = self.models.for_retry(info.where, info.model, str(answer_id), cross)
        answering = self.answerer.answer(
            info.conversation_id, info.parent_id, info.where, sink, model=model
        )
        return await self._tracked(answering)

    def _count(self, platform: str, result: AnswerResult) -> None:
        """A message answered, or why not (a redelivery dropped counts as neither)."""
        if result.status == "ok":
            self.metrics.answered.labels(platform).inc()
        elif result.status != "duplicate":
            self.metrics.failed.labels(platform, result.status).inc()

    async def _tracked(self, work: Coroutine[Any, Any, AnswerResult]) -> AnswerResult:
        """Run one answer as a task the shutdown can wait for (or interrupt)."""
        task = asyncio.ensure_future(work)
        self._inflight.add(task)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if task.cancelled() and not (me is not None and me.cancelling()):
                return AnswerResult("interrupted", notice=INTERRUPTED)  # by shutdown()
            raise

    # --- votes ---------------------------------------------------------------------------------

    async def handle_feedback(self, ev: FeedbackEvent) -> FeedbackResult:
        """Record, replace or remove one person's vote on one answer."""
        return await self.votes.handle(ev)

    # --- the threads ----------------------------------------------------------------------------

    async def knows_thread(self, where: ThreadKey) -> bool:
        """Whether the bot has a conversation in this thread (so it listens without a mention)."""
        return await self.repo.conversation_id(where) is not None

    async def begin_thread(self, where: ThreadKey) -> None:
        """Start an empty conversation now (a DM's /new), so it is the latest even after a
        restart."""
        await self.repo.ensure_conversation(where)

    async def latest_thread(self, platform: str, workspace: str, channel: str) -> str | None:
        """The thread id of the newest conversation in a channel (a DM's current one)."""
        return await self.repo.latest_thread(platform, workspace, channel)

    async def transcript(self, where: ThreadKey, limit: int = 200) -> list[Said]:
        """The newest ``limit`` messages of a thread as the bot remembers them (for /history),
        answers that retried an earlier one, and a battle's two answers, marked."""
        conversation_id = await self.repo.conversation_id(where)
        if conversation_id is None:
            return []
        page = await self.repo.history(conversation_id, limit=limit)
        answered: set[int | None] = set()
        lines: list[Said] = []
        for m in reversed(page):
            if m.role == "user":
                lines.append(Said("user", m.text))
                continue
            if m.status == "ok" and m.side is not None:
                lines.append(Said("assistant", m.text, side=m.side))
            elif m.status == "ok":
                lines.append(Said("assistant", m.text, retry=m.parent_id in answered))
            answered.add(m.parent_id)
        return lines

    async def latest_answer(self, where: ThreadKey) -> int | None:
        """The id of the thread's newest message if it is an answer, finished or failed (what
        a retry retries); None if the thread is empty or ends with an unanswered message."""
        conversation_id = await self.repo.conversation_id(where)
        if conversation_id is None:
            return None
        page = await self.repo.history(conversation_id, limit=1)
        return page[0].id if page and page[0].role == "assistant" else None

    async def opt_out(self, platform: str, user: str) -> None:
        """Keep answering the user, but never export anything of theirs."""
        await self.repo.opt_out(f"{platform}:{user}")

    async def opt_in(self, platform: str, user: str) -> None:
        """Undo `opt_out` (a KOALABOT_OPTOUT_USERS entry stays: the operator's list wins)."""
        await self.repo.opt_in(f"{platform}:{user}")

    async def consent(self, platform: str, user: str, *, opt_out: bool) -> str:
        """Opt the user out (or back in) at once; the words that confirm it. Raises StoreError."""
        if opt_out:
            await self.opt_out(platform, user)
            return OPTED_OUT
        await self.opt_in(platform, user)
        return OPTED_IN

    # --- the platform connects, the process stops --------------------------------------------

    async def tell_interrupted(
        self, platform: str, sink_for: Callable[[ThreadKey], ReplySink]
    ) -> int:
        """Turn the placeholders of answers a crash cut off into a notice, once the platform is
        connected again (``sink_for`` gives a sink for a thread); returns how many.

        Threads not told this way are told when their next message arrives.
        """
        return await self.orphans.tell_platform(platform, sink_for)

    def platform_connected(self, platform: str, sink_for: Callable[[ThreadKey], ReplySink]) -> None:
        """A platform can now be answered in any thread (``sink_for`` gives a sink for one):
        messages a crash left unanswered get answered, oldest first, and those kept in the
        spool, by this process or an earlier one, get stored and answered once the store is
        reachable."""
        if not self.accepting:
            return
        self.unanswered.resume(platform, sink_for, self, self.repo)
        if self.backlog is not None:
            self.backlog.connected(platform, sink_for)
            self.backlog.start()

    async def shutdown(self, grace: float) -> int:
        """Stop taking messages, let answers in flight finish for ``grace`` seconds, then
        interrupt the rest (stored as `interrupted`, with a notice in their threads).

        Returns how many answers were interrupted.
        """
        self.intake.accepting = False
        if self.backlog is not None:
            await self.backlog.stop()
        return await self._inflight.finish(grace)

    async def health(self) -> dict[str, str]:
        """What is wrong, if anything: {"database": …, "spool": …, "backend": …}; empty when
        fine."""
        problems: dict[str, str] = {}
        try:
            await self.repo.ping()
        except StoreError as exc:
            problems["database"] = f"unreachable ({exc.__cause__.__class__.__name__})"
        if self.backlog is not None and (late := self.backlog.late(self.settings.spool_max_age)):
            problems["spool"] = late
        states = await self.models.health()
        if not any(states.values()):
            problems["backend"] = "no healthy TGI endpoint: " + ", ".join(states)
        return problems

    async def _prompt(
        self, conversation_id: int, upto_id: int, tail: ThreadPage | None
    ) -> tuple[str, int, int]:
        """The prompt for answering message ``upto_id``: its text, dropped messages, tokens
        (tests/store/test_sqlite_lane.py compares it with what was sent)."""
        built = await self.answerer.prompt(conversation_id, upto_id, tail)
        return built.prompt, built.dropped, built.tokens

    # --- KeptWork: what the backlog hands back -----------------------------------------------

    def answer_kept(
        self, msg: ChatMessage, sink: ReplySink, stored: tuple[int, int] | None
    ) -> None:
        """Answer a kept message the store has just taken, alongside the rest; counted, and
        waited for by the shutdown."""
        task = asyncio.ensure_future(self.intake.answer_stored(msg, sink, stored))
        self._inflight.add(task)

        def counted(done: asyncio.Task[AnswerResult]) -> None:
            if not done.cancelled() and done.exception() is None:
                self._count(msg.where.platform, done.result())

        task.add_done_callback(counted)

    async def judge(self, a_id: int, b_id: int, user: str, choice: str) -> bool:
        """Store a person's latest choice in a battle (a, b, tie, both_bad); False when the two
        ids are not two answers to one message."""
        return await self.battles.judge(a_id, b_id, user, choice)

    async def choose(
        self, a_id: int, b_id: int, user: str, choice: str, clicked: Clicked | None = None
    ) -> str:
        """A battle's choice clicked on ``clicked`` (the ownership check, access and the vote
        rate apply): the words for the person who chose."""
        return await self.battles.choose(a_id, b_id, user, choice, clicked)

    async def record_vote(self, vote: FeedbackEvent, cast: datetime) -> FeedbackResult:
        """Record a kept vote, stamped with when it was cast."""
        return await self.votes.record(vote, cast)


__all__ = [
    "EMPTY_MESSAGE",
    "INTERRUPTED",
    "ONLY_ATTACHMENTS",
    "ORDER_WAIT",
    "SHUTTING_DOWN",
    "SPOOLED",
    "UNEXPECTED",
    "Engine",
]
