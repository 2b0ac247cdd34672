"""The one orchestrator: store first, then think, then answer.

Every adapter hands its messages and votes to an Engine. For each message: drop a delivery that
was already taken in, commit the user's message, take the conversation's lock (in-process, plus
PostgreSQL's advisory lock so replicas never interleave in one thread), build the prompt from the
thread's tail within the model's budget, stream the answer into the adapter's reply sink, and
commit the answer with the record of how it was made.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from koalabot.backend import Backend, Completion, GenerationParams
from koalabot.config import Settings
from koalabot.engine.access import AccessPolicy
from koalabot.engine.backlog import Backlog
from koalabot.engine.streaming import ReplyStreamer
from koalabot.errors import (
    AccessDeniedError,
    BackendError,
    KoalabotError,
    PromptTooLongError,
    RateLimitedError,
    StoreError,
)
from koalabot.events import (
    AnswerResult,
    ChatMessage,
    FeedbackEvent,
    FeedbackResult,
    ReplySink,
    ThreadKey,
    has_words,
)
from koalabot.metrics import Metrics
from koalabot.prompt.budget import CachedCounter, Limits
from koalabot.prompt.history import HistoryPrompter
from koalabot.prompt.templates import TEMPLATES, Turn
from koalabot.store.database import Database, open_database
from koalabot.store.repository import GenerationRecord, Orphan, Page, Repository
from koalabot.store.spool import Spool, SpoolError

log = logging.getLogger(__name__)

EMPTY_MESSAGE = "I only read text. Write your question in words and I'll answer it."
ONLY_ATTACHMENTS = (
    "I can't read attachments or images, only text. Paste the part you want me to look at."
)
INTERRUPTED = "I was restarted before I could finish this answer. Please ask again."
SHUTTING_DOWN = "I'm restarting right now; your message is saved. Please send it again in a minute."
UNEXPECTED = "Something went wrong on my side while answering. Please try again."
SPOOLED = (
    "I could not reach my memory (the database) just now. I have kept your message and will "
    "answer it here as soon as it is back: no need to send it again."
)
#: Longest an answer waits for earlier messages of its thread to get theirs first.
ORDER_WAIT = 10.0


def _cut_notice(dropped: int) -> str:
    noun = "message" if dropped == 1 else "messages"
    return (
        f"(This thread is long: I no longer see its {dropped} oldest {noun}. "
        "Start a new thread to begin fresh.)"
    )


@dataclass
class _LockEntry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Engine:
    """Turns ChatMessages into stored, streamed answers and FeedbackEvents into votes."""

    def __init__(self, settings: Settings, db: Database, backend: Backend) -> None:
        self.settings = settings
        self.db = db
        self.backend = backend
        self.repo = Repository(db)
        self.policy = AccessPolicy(settings)
        self.template = TEMPLATES[settings.template]
        self.params = GenerationParams.from_settings(settings, stop=self.template.stop)
        self.counter = CachedCounter(backend)
        self.history = HistoryPrompter(self.repo, self.counter, self.template)
        self._limits: Limits | None = None
        self._locks: dict[int, _LockEntry] = {}
        self.backend_urls = settings.endpoints
        self.metrics = Metrics()
        self.accepting = True
        self._tasks: set[asyncio.Task[AnswerResult]] = set()
        #: Answers a crash cut off, by thread, until their threads are told (tell_interrupted).
        self._orphans: dict[ThreadKey, list[Orphan]] = {}
        #: Messages and votes that came while the store was unreachable (none kept without a
        #: spool path).
        self.spool = (
            Spool(Path(settings.spool_path), settings.spool_limit) if settings.spool_path else None
        )
        self.backlog = (
            Backlog(
                self.spool,
                self.repo,
                self.metrics,
                settings.spool_retry_interval,
                answer=self._after_storing,
                record_vote=self._record_vote,
                track=self._track_replayed,
            )
            if self.spool is not None
            else None
        )

    @classmethod
    async def open(cls, settings: Settings) -> Engine:
        """Open the store (SQLite upgrades itself) and the backend; recover crashed answers."""
        db = await open_database(settings.database_url)
        engine = cls(settings, db, Backend.from_settings(settings))
        try:
            orphans = await engine.repo.recover_interrupted()
        except BaseException:
            await engine.close()
            raise
        for orphan in orphans:
            engine._orphans.setdefault(orphan.where, []).append(orphan)
        if orphans:
            log.warning("marked %d answers left streaming by a crash as interrupted", len(orphans))
        if engine.spool is not None and (problem := engine.spool.problem()):
            log.warning(
                "KOALABOT_SPOOL_PATH=%s cannot be used: %s. Messages sent while the database "
                "is down will not be kept; people will be asked to send them again",
                engine.spool.path,
                problem,
            )
        elif engine.spool is not None and (waiting := len(engine.spool)):
            log.warning(
                "%d messages kept while the database was unreachable (%s) are answered once "
                "their platform connects",
                waiting,
                engine.spool.path,
            )
        return engine

    async def close(self) -> None:
        """Close the backend sessions, the database pool and the spool."""
        if self.backlog is not None:
            await self.backlog.stop()
        if self.spool is not None:
            self.spool.close()
        await self.backend.close()
        await self.repo.close()
        await self.db.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- messages ------------------------------------------------------------------------

    async def handle_message(self, msg: ChatMessage, sink: ReplySink) -> AnswerResult:
        """Store, then answer one human message in its thread."""
        self.metrics.received.labels(msg.where.platform).inc()
        result = await self._tracked(self._handle_message(msg, sink))
        self._count(msg.where.platform, result)
        return result

    def _count(self, platform: str, result: AnswerResult) -> None:
        """A message answered, or why not (a redelivery dropped counts as neither)."""
        if result.status == "ok":
            self.metrics.answered.labels(platform).inc()
        elif result.status != "duplicate":
            self.metrics.failed.labels(platform, result.status).inc()

    async def _tracked(self, work: Coroutine[Any, Any, AnswerResult]) -> AnswerResult:
        """Run one answer as a task the shutdown can wait for (or interrupt)."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if task.cancelled() and not (me is not None and me.cancelling()):
                return AnswerResult("interrupted", notice=INTERRUPTED)  # by shutdown()
            raise
        finally:
            if task.done():
                self._tasks.discard(task)
            else:
                task.add_done_callback(self._tasks.discard)

    async def shutdown(self, grace: float) -> int:
        """Stop taking messages, let answers in flight finish for ``grace`` seconds, then
        interrupt the rest (stored as `interrupted`, with a notice in their threads).

        Returns how many answers were interrupted.
        """
        self.accepting = False
        if self.backlog is not None:
            await self.backlog.stop()
        pending = {t for t in self._tasks if not t.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return len(pending)

    async def tell_interrupted(
        self, platform: str, sink_for: Callable[[ThreadKey], ReplySink]
    ) -> int:
        """Turn the placeholders of answers a crash cut off into a notice, once the platform is
        connected again (``sink_for`` gives a sink for a thread); returns how many.

        Threads not told this way are told when their next message arrives.
        """
        told = 0
        for where in [w for w in self._orphans if w.platform == platform]:
            told += await self._tell_orphans(where, sink_for(where))
        return told

    async def _tell_orphans(self, where: ThreadKey, sink: ReplySink) -> int:
        orphans = self._orphans.pop(where, [])
        for orphan in orphans:
            try:
                if orphan.platform_message_id is None:
                    await sink.notice(INTERRUPTED)
                else:
                    await sink.edit(orphan.platform_message_id, f"⚠️ {INTERRUPTED}")
            except Exception:
                log.warning("could not tell answer %d was interrupted", orphan.answer_id)
        return len(orphans)

    # --- the spool: messages that came while the store was unreachable ---------------------------

    def platform_connected(self, platform: str, sink_for: Callable[[ThreadKey], ReplySink]) -> None:
        """A platform can now be answered in any thread (``sink_for`` gives a sink for one):
        messages of it kept in the spool, by this process or an earlier one, get stored and
        answered once the store is reachable."""
        if self.backlog is not None and self.accepting:
            self.backlog.connected(platform, sink_for)
            self.backlog.start()

    async def _keep_for_later(
        self, msg: ChatMessage, arrived: datetime, sink: ReplySink, failure: StoreError
    ) -> AnswerResult:
        """The store failed to take a message: keep it in the spool, to be answered later."""
        if self.backlog is None:
            return await self._refuse(sink, "failed", failure.user_message)
        try:
            kept = self.backlog.keep_message(msg, arrived, sink)
        except SpoolError as exc:
            log.error("%s", exc)
            return await self._refuse(sink, "failed", exc.user_message)
        if not kept:
            log.info("duplicate delivery %s dropped (spooled)", ",".join(msg.dedupe_keys))
            return AnswerResult("duplicate")
        if self.accepting:
            self.backlog.start()
        return await self._refuse(sink, "spooled", SPOOLED)

    def _track_replayed(self, task: asyncio.Task[AnswerResult], platform: str) -> None:
        """Count the answer to a kept message, and let the shutdown wait for it."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

        def counted(done: asyncio.Task[AnswerResult]) -> None:
            if not done.cancelled() and done.exception() is None:
                self._count(platform, done.result())

        task.add_done_callback(counted)

    async def health(self) -> dict[str, str]:
        """What is wrong, if anything: {"database": reason, "backend": reason}; empty when fine."""
        problems: dict[str, str] = {}
        try:
            await self.repo.ping()
        except StoreError as exc:
            problems["database"] = f"unreachable ({exc.__cause__.__class__.__name__})"
        states = await self.backend.health()
        if not any(states.values()):
            problems["backend"] = "no healthy TGI endpoint: " + ", ".join(states)
        return problems

    async def _handle_message(self, msg: ChatMessage, sink: ReplySink) -> AnswerResult:
        try:
            self.policy.check_allowed(msg)
        except AccessDeniedError as exc:
            log.info("denied %s user %s in %s", msg.where.platform, msg.user, msg.where.channel)
            return await self._refuse(sink, "denied", exc.user_message)
        arrived = datetime.now(UTC)
        try:
            if self.backlog is not None:
                # Earlier messages of this thread wait in the spool: stored first, they keep
                # their place in the thread (and are answered first).
                await self.backlog.before_message(msg.where, sink)
            stored = await self.repo.add_user_message(
                msg.where, msg.user, msg.text, msg.message_id, msg.dedupe_keys
            )
        except StoreError as exc:
            log.exception("could not store a message")
            return await self._keep_for_later(msg, arrived, sink, exc)
        return await self._after_storing(msg, sink, stored)

    async def _after_storing(
        self, msg: ChatMessage, sink: ReplySink, stored: tuple[int, int] | None
    ) -> AnswerResult:
        if stored is None:
            log.info("duplicate delivery %s dropped", ",".join(msg.dedupe_keys))
            return AnswerResult("duplicate")
        conversation_id, message_id = stored
        if msg.where in self._orphans:
            await self._tell_orphans(msg.where, sink)
        if not self.accepting:
            return await self._decline(sink, "interrupted", SHUTTING_DOWN, message_id)
        if not has_words(msg.text):
            notice = ONLY_ATTACHMENTS if msg.attachments else EMPTY_MESSAGE
            return await self._decline(sink, "empty", notice, message_id)
        try:
            self.policy.check_rate(msg.where.platform, msg.user)
        except RateLimitedError as exc:
            return await self._decline(sink, "rate_limited", exc.user_message, message_id)
        return await self._answer(conversation_id, message_id, msg.where, sink, in_order=True)

    async def regenerate(self, answer_id: int, user: str, sink: ReplySink) -> AnswerResult:
        """Another answer to the same user message, as a sibling both can be voted on."""
        try:
            info = await self.repo.answer(answer_id)
        except StoreError as exc:
            return await self._refuse(sink, "failed", exc.user_message)
        if info is None or info.role != "assistant" or info.parent_id is None:
            log.info("regenerate of unknown answer %s ignored", answer_id)
            return AnswerResult("unknown")
        probe = ChatMessage(info.where, user, "", "")
        try:
            self.policy.check_allowed(probe)
            self.policy.check_rate(info.where.platform, user)
        except (AccessDeniedError, RateLimitedError) as exc:
            return await self._refuse(sink, "denied", exc.user_message)
        return await self._tracked(
            self._answer(info.conversation_id, info.parent_id, info.where, sink)
        )

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

    async def transcript(self, where: ThreadKey, limit: int = 200) -> list[Turn]:
        """The newest ``limit`` messages of a thread as the bot remembers them (for /history)."""
        conversation_id = await self.repo.conversation_id(where)
        if conversation_id is None:
            return []
        page = await self.repo.history(conversation_id, limit=limit)
        visible = [m for m in page if m.role == "user" or m.status == "ok"]
        return [
            Turn("user" if m.role == "user" else "assistant", m.text) for m in reversed(visible)
        ]

    async def opt_out(self, platform: str, user: str) -> None:
        """Keep answering the user, but never export anything of theirs."""
        await self.repo.opt_out(f"{platform}:{user}")

    async def opt_in(self, platform: str, user: str) -> None:
        """Undo `opt_out` (a KOALABOT_OPTOUT_USERS entry stays: the operator's list wins)."""
        await self.repo.opt_in(f"{platform}:{user}")

    # --- feedback ----------------------------------------------------------------------------

    async def handle_feedback(self, ev: FeedbackEvent) -> FeedbackResult:
        """Record, replace or remove one person's vote on one answer."""
        if ev.is_bot:
            return FeedbackResult(False, reason="votes by bots do not count")
        arrived = datetime.now(UTC)
        try:
            if self.backlog is not None:
                # Votes kept while the store was down go first: a person's latest vote wins.
                async with self.backlog.before_vote():
                    return await self._record_vote(ev)
            return await self._record_vote(ev)
        except StoreError:
            log.exception("could not store a vote")
            return self._keep_vote(ev, arrived)

    async def _record_vote(self, ev: FeedbackEvent, at: datetime | None = None) -> FeedbackResult:
        answer_id = ev.answer_id
        if answer_id is None and ev.channel and ev.platform_message_id:
            answer_id = await self.repo.answer_by_ref(
                ev.platform, ev.channel, ev.platform_message_id
            )
        info = await self.repo.answer(answer_id) if answer_id is not None else None
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

    def _keep_vote(self, ev: FeedbackEvent, arrived: datetime) -> FeedbackResult:
        """The store failed to take a vote: keep it in the spool, to be recorded later."""
        failed = FeedbackResult(False, reason="store unavailable")
        if self.backlog is None:
            return failed
        try:
            self.backlog.keep_vote(ev, arrived)
        except SpoolError as exc:
            log.error("%s", exc)
            return failed
        if self.accepting:
            self.backlog.start()
        rating = 0 if ev.removed else (1 if ev.rating > 0 else -1)
        return FeedbackResult(
            False, ev.answer_id, rating, "kept until the database is back", kept=True
        )

    # --- the answer ----------------------------------------------------------------------------

    async def _refuse(
        self, sink: ReplySink, status: str, notice: str, message_id: int | None = None
    ) -> AnswerResult:
        await self._notify(sink, notice)
        return AnswerResult(status, user_message_id=message_id, notice=notice)

    async def _decline(
        self, sink: ReplySink, status: str, notice: str, message_id: int
    ) -> AnswerResult:
        """Refuse a stored message, recorded so its thread does not wait for its answer."""
        try:
            await self.repo.decline(message_id)
        except StoreError:
            log.warning("could not record message %d as declined", message_id)
        return await self._refuse(sink, status, notice, message_id)

    async def _notify(self, sink: ReplySink, notice: str) -> None:
        try:
            await sink.notice(notice)
        except Exception:
            log.warning("could not show a notice", exc_info=True)

    @contextlib.asynccontextmanager
    async def _conversation_lock(self, conversation_id: int) -> AsyncIterator[None]:
        entry = self._locks.setdefault(conversation_id, _LockEntry())
        entry.users += 1
        try:
            async with entry.lock, self.repo.thread_lock(conversation_id):
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                self._locks.pop(conversation_id, None)

    @contextlib.asynccontextmanager
    async def _turn(
        self, conversation_id: int, parent_id: int, in_order: bool
    ) -> AsyncIterator[None]:
        """Hold the thread's lock; with ``in_order``, once earlier messages of the thread have
        their answers (waiting at most ORDER_WAIT: their handler may have died)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ORDER_WAIT
        delay = 0.01
        while True:
            async with self._conversation_lock(conversation_id):
                if not (
                    in_order
                    and self.db.dialect == "postgresql"  # one SQLite process orders by its lock
                    and loop.time() < deadline
                    and await self.repo.earlier_waiting(conversation_id, parent_id)
                ):
                    yield
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def _answer(
        self,
        conversation_id: int,
        parent_id: int,
        where: ThreadKey,
        sink: ReplySink,
        *,
        in_order: bool = False,
    ) -> AnswerResult:
        generating = False
        try:
            async with self._turn(conversation_id, parent_id, in_order):
                generating = True
                return await self._generate(conversation_id, parent_id, where, sink)
        except StoreError as exc:
            log.exception("store failed while answering")
            return await self._refuse(sink, "failed", exc.user_message, parent_id)
        except asyncio.CancelledError:
            if not generating:  # stopped while waiting for its turn; the message is stored
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._notify(sink, SHUTTING_DOWN))
            raise

    async def _generate(
        self, conversation_id: int, parent_id: int, where: ThreadKey, sink: ReplySink
    ) -> AnswerResult:
        streamer = ReplyStreamer(sink)
        started = time.monotonic()
        prompt, dropped, text = "", 0, ""
        answer_id: int | None = None
        try:
            await streamer.start()
            start = await self.repo.start_answer(
                conversation_id,
                parent_id,
                streamer.message_ids[0],
                tail=self.history.first_page(conversation_id),
            )
            answer_id, first = start.answer_id, start.first
            await sink.thinking(True)
            prompt, dropped, prompt_tokens = await self._prompt(
                conversation_id, parent_id, start.tail
            )
            stream = self.backend.stream(prompt, self.params)
            self.metrics.backend_in_flight.inc()
            try:
                async for piece in stream:
                    if not text:
                        await sink.thinking(False)
                    text += piece
                    streamer.update(text.strip())
            finally:
                self.metrics.backend_in_flight.dec()
            completion = stream.completion
            assert completion is not None
            answer = self._clean(completion.text)
            record = GenerationRecord(
                prompt=prompt,
                template=self.template.name,
                parameters=self.params.as_dict(),
                model_id=completion.model_id,
                endpoint=completion.endpoint,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion.generated_tokens,
                finish_reason=completion.finish_reason,
                time_to_first_token=completion.time_to_first_token,
                total_time=completion.total_time,
                dropped_turns=dropped,
            )
            shown_so_far = list(streamer.message_ids)
            await self.repo.finish_answer(answer_id, answer, "ok", record, where, shown_so_far)
            shown = answer or "(no answer)"
            if dropped:
                shown += "\n\n" + _cut_notice(dropped)
            if first and self.settings.notice:
                shown += "\n\n" + self.settings.notice
            await streamer.finish(shown, answer_id)
            await self.repo.add_refs(answer_id, where, streamer.message_ids[len(shown_so_far) :])
            self._observe(where.platform, completion, started, streamer.edit_calls)
            log.info(
                "answered %s answer=%d message=%d conversation=%d ttft=%.3fs total=%.3fs tokens=%s",
                where.platform,
                answer_id,
                parent_id,
                conversation_id,
                completion.time_to_first_token or 0.0,
                time.monotonic() - started,
                completion.generated_tokens,
            )
            return AnswerResult(
                "ok",
                answer_id,
                parent_id,
                answer,
                dropped,
                message_ids=tuple(streamer.message_ids),
            )
        except asyncio.CancelledError:
            log.warning(
                "answer %s interrupted: message=%d conversation=%d total=%.3fs",
                answer_id,
                parent_id,
                conversation_id,
                time.monotonic() - started,
            )
            await self._give_up(answer_id, "interrupted", text, prompt, dropped, INTERRUPTED)
            with contextlib.suppress(Exception):
                await asyncio.shield(streamer.fail(INTERRUPTED, text.strip()))
            raise
        except KoalabotError as exc:
            status = "too_long" if isinstance(exc, PromptTooLongError) else "failed"
            if isinstance(exc, BackendError):
                self.metrics.backend_errors.labels(type(exc).__name__).inc()
            self.metrics.edits.labels(where.platform).inc(streamer.edit_calls)
            partial = exc.partial if isinstance(exc, BackendError) and exc.partial else text
            log.warning(
                "answer %s failed: %s message=%d conversation=%d total=%.3fs",
                answer_id,
                exc.__class__.__name__,
                parent_id,
                conversation_id,
                time.monotonic() - started,
            )
            result = await self._failed(
                streamer, answer_id, parent_id, status, partial, prompt, dropped, exc.user_message
            )
            return dataclasses.replace(result, error=type(exc).__name__)
        except Exception:
            log.exception("answer %s failed unexpectedly", answer_id)
            return await self._failed(
                streamer, answer_id, parent_id, "failed", text, prompt, dropped, UNEXPECTED
            )
        finally:
            with contextlib.suppress(Exception):
                await sink.thinking(False)

    async def _failed(
        self,
        streamer: ReplyStreamer,
        answer_id: int | None,
        parent_id: int,
        status: str,
        partial: str,
        prompt: str,
        dropped: int,
        notice: str,
    ) -> AnswerResult:
        await self._give_up(answer_id, "failed", partial, prompt, dropped, notice)
        try:
            await streamer.fail(notice, partial.strip())
        except Exception:
            log.warning("could not show the failure notice", exc_info=True)
            await self._notify(streamer.sink, notice)
        return AnswerResult(status, answer_id, parent_id, partial.strip(), dropped, notice)

    async def _give_up(
        self,
        answer_id: int | None,
        status: str,
        partial: str,
        prompt: str,
        dropped: int,
        error: str,
    ) -> None:
        if answer_id is None:  # it never got its row: nothing to mark
            return
        record = GenerationRecord(
            prompt=prompt,
            template=self.template.name,
            parameters=self.params.as_dict(),
            dropped_turns=dropped,
            error=error,
        )
        try:
            await asyncio.shield(
                self.repo.finish_answer(answer_id, partial.strip(), status, record)
            )
        except Exception:
            log.exception("could not mark answer %d %s", answer_id, status)

    def _observe(self, platform: str, completion: Completion, started: float, edits: int) -> None:
        m = self.metrics
        m.edits.labels(platform).inc(edits)
        m.duration.observe(time.monotonic() - started)
        if completion.time_to_first_token is not None:
            m.ttft.observe(completion.time_to_first_token)
            streaming = completion.total_time - completion.time_to_first_token
            if completion.generated_tokens and streaming > 0:
                m.tokens_per_second.observe(completion.generated_tokens / streaming)

    def _clean(self, text: str) -> str:
        """The answer as stored: stop sequences TGI leaves in the text removed, whitespace cut."""
        answer = text.strip()
        for stop in self.template.stop:
            if answer.endswith(stop):
                answer = answer[: -len(stop)].rstrip()
        return answer

    # --- the prompt ----------------------------------------------------------------------------

    async def _get_limits(self) -> Limits:
        if self._limits is None:
            self._limits = Limits.from_info(await self.backend.info())
        return self._limits

    async def _prompt(
        self, conversation_id: int, upto_id: int, tail: Page | None
    ) -> tuple[str, int, int]:
        """The prompt for answering message ``upto_id``: its text, dropped messages, tokens."""
        limits = await self._get_limits()
        built = await self.history.build(
            conversation_id, upto_id, limits, self.params.max_new_tokens, tail
        )
        return built.prompt, built.dropped, built.tokens
