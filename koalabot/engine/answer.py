"""The turn: one answer to one stored user message.

Take the thread's turn (`turns`), then build the prompt from the thread within the model's
budget and ask the model while the answer's row is created (it holds the answer's place in the
thread, and a crash leaves a row to mark `interrupted`), the placeholder posted, its platform id
stored and the typing indicator shown: the model's first token takes longest, so the store's and
the platform's round trips run beside it instead of before it, and the first words show about a
first token after the event. The price: the prompt's read of the thread no longer shares the
row's transaction, and the placeholder's id is a second small write. Then stream the model's
words into the placeholder, and commit the answer with the record of how it was made.

A failure of the prompt or the model is raised only when the stream is read, after the start,
so every failure path finds the row and the placeholder as before. Start, stream and finish are
separate steps; what a failure must know to record and show what there was lives in one
`_Attempt`, so each failure path is the same few lines whatever step it came from.

The prompt is the model's own (`prompts`): fitted to its window, counted with its tokenizer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from koalabot.backend import Backend, Completion, GenerationParams, GenerationStream
from koalabot.backend.models import ModelSet
from koalabot.engine.notices import (
    INTERRUPTED,
    SHUTTING_DOWN,
    UNEXPECTED,
    consent_notice,
    notify,
    refuse,
    retry_notice,
    shown_answer,
)
from koalabot.engine.prompts import ModelPrompts
from koalabot.engine.streaming import ReplyStreamer
from koalabot.engine.turns import Turns
from koalabot.errors import BackendError, KoalabotError, PromptTooLongError, StoreError
from koalabot.events import AnswerResult, ReplySink, SideBySide, ThreadKey
from koalabot.metrics import Metrics
from koalabot.prompt.history import HistoryPrompter, ThreadPage, ThreadPrompt
from koalabot.prompt.templates import Template
from koalabot.store.repository import GenerationRecord, Repository

log = logging.getLogger(__name__)


@dataclass
class _Attempt:
    """One answer on its way, as far as it got."""

    streamer: ReplyStreamer
    conversation_id: int
    parent_id: int
    where: ThreadKey
    started: float = field(default_factory=time.monotonic)
    answer_id: int | None = None  # once its row exists
    first: bool = False  # the thread's first answer
    prompt: str = ""
    dropped: int = 0
    prompt_tokens: int = 0
    #: The prompt being built and the model asked, beside the start: the stream and its first
    #: piece (None when the model said nothing).
    asking: asyncio.Task[tuple[GenerationStream, str | None]] | None = None
    model: str = ""  # the named model asked ("" with one unnamed backend)
    label: str = ""  # "A" or "B" in a battle
    rival: int | None = None  # answer A's id, for a battle's answer B

    @property
    def text(self) -> str:
        """The model's words so far."""
        return self.streamer.text

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Answerer:
    """Makes, streams and records answers (one `answer` call per answer)."""

    def __init__(
        self,
        repo: Repository,
        backend: Backend,
        history: HistoryPrompter,
        template: Template,
        params: GenerationParams,
        *,
        turns: Turns,
        metrics: Metrics,
        first_notice: str,
        models: ModelSet | None = None,
        show_model: bool = False,
    ) -> None:
        self.repo = repo
        self.backend = backend
        #: The backends by model name (just ``backend`` without KOALABOT_MODELS).
        self.models = models or ModelSet.single(backend)
        #: Name the model under each answer (KOALABOT_SHOW_MODEL); blind otherwise.
        self.show_model = show_model
        #: Each model's prompt, counted with its own tokenizer.
        self.prompts = ModelPrompts(repo, history, self.models, template, params.max_new_tokens)
        self.template = template
        self.params = params
        self.turns = turns
        self.metrics = metrics
        #: Shown under a thread's first answer (the operator's notice; "" for none).
        self.first_notice = first_notice

    async def answer(
        self,
        conversation_id: int,
        parent_id: int,
        where: ThreadKey,
        sink: ReplySink,
        *,
        in_order: bool = False,
        model: str | None = None,
    ) -> AnswerResult:
        """Answer stored message ``parent_id`` in its thread, once it is its turn (by
        ``model``, else by the model the thread is assigned)."""
        chosen = self.models.for_thread(where) if model is None else model

        async def one() -> AnswerResult:
            attempt = _Attempt(ReplyStreamer(sink), conversation_id, parent_id, where)
            attempt.model = chosen
            return await self._generate(attempt)

        return await self._in_turn(conversation_id, parent_id, sink, in_order, one)

    async def answer_pair(
        self,
        conversation_id: int,
        parent_id: int,
        where: ThreadKey,
        sink: ReplySink,
        models: tuple[str, str],
        *,
        in_order: bool = False,
    ) -> AnswerResult:
        """A battle: answers A and B by ``models``, in one turn of the thread (the next message
        waits for both); A's result, with B's as its ``rival``. Where the sink can make another
        (`SideBySide`), B's message is posted under A's and both stream at once; else B after A.
        """

        def attempt(to: ReplySink, side: int) -> _Attempt:
            made = _Attempt(ReplyStreamer(to), conversation_id, parent_id, where)
            made.model, made.label = models[side], "AB"[side]
            return made

        async def pair() -> AnswerResult:
            a = attempt(sink, 0)
            if not isinstance(sink, SideBySide):
                return await self._one_then_other(a, attempt(sink, 1))
            return await self._side_by_side(a, attempt(sink.beside(), 1))

        return await self._in_turn(conversation_id, parent_id, sink, in_order, pair)

    async def _one_then_other(self, a: _Attempt, b: _Attempt) -> AnswerResult:
        first = await self._generate(a)
        if first.status != "ok" or first.answer_id is None:
            return first
        b.rival = first.answer_id
        return dataclasses.replace(first, rival=await self._generate(b))

    async def _side_by_side(self, a: _Attempt, b: _Attempt) -> AnswerResult:
        """A's row and message first (A shows above B), then B's, then both stream."""
        failed = await self._begin(a)
        if failed is not None:
            return failed
        b.rival = a.answer_id
        try:
            failed = await self._begin(b)
        except asyncio.CancelledError:  # stopped between the two starts: A stops too
            assert a.asking is not None
            await self._abandon(a.asking)
            await self._interrupted(a)
            raise
        b.first = False  # the thread's first-answer notice goes under A only
        if failed is not None:
            return dataclasses.replace(await self._complete(a), rival=failed)
        done_a, done_b = await asyncio.gather(self._complete(a), self._complete(b))
        return dataclasses.replace(done_a, rival=done_b)

    async def _in_turn(
        self,
        conversation_id: int,
        parent_id: int,
        sink: ReplySink,
        in_order: bool,
        work: Callable[[], Awaitable[AnswerResult]],
    ) -> AnswerResult:
        """Run ``work`` once it is the thread's turn; a store failure told in the thread."""
        generating = False
        try:
            async with self.turns.turn(conversation_id, parent_id, in_order):
                generating = True
                return await work()
        except StoreError as exc:
            log.exception("store failed while answering")
            return await refuse(sink, "failed", exc.user_message, parent_id)
        except asyncio.CancelledError:
            if not generating:  # stopped while waiting for its turn; the message is stored
                with contextlib.suppress(Exception):  # told to send it again: not answered later
                    await asyncio.shield(self.repo.decline(parent_id))
                with contextlib.suppress(Exception):
                    await asyncio.shield(notify(sink, SHUTTING_DOWN))
            raise

    async def _generate(self, a: _Attempt) -> AnswerResult:
        failed = await self._begin(a)
        return failed if failed is not None else await self._complete(a)

    async def _begin(self, a: _Attempt) -> AnswerResult | None:
        """The start: None once the answer's row and message exist, else how it failed."""

        async def start() -> None:
            await self._start(a)

        failed = await self._guarded(a, start)
        if failed is not None:
            await self._not_thinking(a)
        return failed

    async def _complete(self, a: _Attempt) -> AnswerResult:
        """Stream and finish a started answer; its result, whatever happened."""

        async def rest() -> AnswerResult:
            assert a.answer_id is not None
            return await self._finish(a, a.answer_id, await self._stream(a))

        try:
            result = await self._guarded(a, rest)
        finally:
            await self._not_thinking(a)
        assert result is not None
        return result

    @staticmethod
    async def _not_thinking(a: _Attempt) -> None:
        with contextlib.suppress(Exception):
            await a.streamer.sink.thinking(False)

    async def _guarded(
        self, a: _Attempt, step: Callable[[], Awaitable[AnswerResult | None]]
    ) -> AnswerResult | None:
        """Run a step of ``a``; a failure recorded and shown as the answer's result."""
        try:
            return await step()
        except asyncio.CancelledError:
            await self._interrupted(a)
            raise
        except KoalabotError as exc:
            return await self._failed_with(a, exc)
        except Exception:
            log.exception("answer %s failed unexpectedly", a.answer_id)
            return await self._failed(a, "failed", a.text, UNEXPECTED)

    # --- the three steps ----------------------------------------------------------------------

    async def _start(self, a: _Attempt) -> int:
        """Ask the model and, meanwhile, create the answer's row, post the placeholder, store
        where it shows and show that the bot is thinking; the answer's id."""
        a.asking = asyncio.create_task(self._ask(a), name="ask-model")
        try:
            # Sent to the store before the task's first read: the row keeps its place.
            side = a.label or None
            start = await self.repo.start_answer(a.conversation_id, a.parent_id, side=side)
            a.answer_id, a.first = start.answer_id, start.first
            await a.streamer.start()
            await asyncio.gather(self._shown_at(a), a.streamer.sink.thinking(True))
        except BaseException:
            await self._abandon(a.asking)
            raise
        return a.answer_id

    async def _shown_at(self, a: _Attempt) -> None:
        """Store the placeholder's platform id, so a restart after a crash can find it."""
        assert a.answer_id is not None
        ids = a.streamer.message_ids[:1]
        await self.repo.finish_answer(a.answer_id, "", "streaming", None, a.where, ids)

    async def _ask(self, a: _Attempt) -> tuple[GenerationStream, str | None]:
        """Build the prompt, send it, and wait for the model's first piece."""
        built = await self.prompt(a.conversation_id, a.parent_id, model=a.model)
        a.prompt, a.dropped, a.prompt_tokens = built.prompt, built.dropped, built.tokens
        stream = self.models.backend(a.model).stream(a.prompt, self.params)
        self.metrics.backend_in_flight.inc()
        try:
            return stream, await anext(aiter(stream), None)
        except BaseException:
            self.metrics.backend_in_flight.dec()
            await stream.aclose()
            raise

    async def _abandon(self, asking: asyncio.Task[tuple[GenerationStream, str | None]]) -> None:
        """Stop asking the model (the start failed): its request is cut, its stream closed."""
        if asking.done() and not asking.cancelled() and asking.exception() is None:
            stream, _ = asking.result()
            self.metrics.backend_in_flight.dec()
            await stream.aclose()
            return
        asking.cancel()
        await asyncio.wait([asking])
        if not asking.cancelled():
            asking.exception()  # retrieved: the start's own failure is the one to report

    async def _stream(self, a: _Attempt) -> Completion:
        """The model's words into the placeholder as they come; how the model finished."""
        assert a.asking is not None
        stream, first = await a.asking
        try:
            async with stream:
                if first is not None:
                    await self._show(a, first)
                    async for piece in stream:
                        await self._show(a, piece)
        finally:
            self.metrics.backend_in_flight.dec()
        assert stream.completion is not None
        return stream.completion

    async def _show(self, a: _Attempt, piece: str) -> None:
        first = not a.streamer.has_text
        a.streamer.add(piece)  # first: the streamer shows it while the status is cleared
        if first:
            await a.streamer.sink.thinking(False)

    async def _finish(self, a: _Attempt, answer_id: int, completion: Completion) -> AnswerResult:
        """Commit the answer and its record, then show it whole (with its notes)."""
        answer = self._clean(completion.text)
        shown_so_far = list(a.streamer.message_ids)
        record = self._record(a, completion)
        model = a.model or completion.model_id
        await self.repo.finish_answer(
            answer_id, answer, "ok", record, a.where, shown_so_far, model=model
        )
        consent = consent_notice(self.first_notice, a.where.platform) if a.first else ""
        label = f"*Answer {a.label}*" if a.label else ""
        notice = "\n\n".join(filter(None, [label, consent, self._sign(a)]))
        await a.streamer.finish(shown_answer(answer, a.dropped, notice), answer_id, a.rival)
        more = a.streamer.message_ids[len(shown_so_far) :]
        await self.repo.add_refs(answer_id, a.where, more)
        self._observe(a, completion)
        log.info(
            "answered %s answer=%d message=%d conversation=%d ttft=%.3fs total=%.3fs tokens=%s",
            a.where.platform,
            answer_id,
            a.parent_id,
            a.conversation_id,
            completion.time_to_first_token or 0.0,
            a.elapsed(),
            completion.generated_tokens,
        )
        ids = tuple(a.streamer.message_ids)
        return AnswerResult("ok", answer_id, a.parent_id, answer, a.dropped, message_ids=ids)

    def _record(self, a: _Attempt, completion: Completion) -> GenerationRecord:
        return GenerationRecord(
            prompt=a.prompt,
            template=self.template.name,
            parameters=self.params.as_dict(),
            model_id=completion.model_id,
            endpoint=completion.endpoint,
            prompt_tokens=a.prompt_tokens,
            completion_tokens=completion.generated_tokens,
            finish_reason=completion.finish_reason,
            time_to_first_token=completion.time_to_first_token,
            total_time=completion.total_time,
            dropped_turns=a.dropped,
        )

    # --- when it goes wrong ---------------------------------------------------------------------

    async def _interrupted(self, a: _Attempt) -> None:
        """Cancelled (the bot stops): store what there is as `interrupted`, and say so."""
        log.warning(
            "answer %s interrupted: message=%d conversation=%d total=%.3fs",
            a.answer_id,
            a.parent_id,
            a.conversation_id,
            a.elapsed(),
        )
        await self._give_up(a, "interrupted", a.text, INTERRUPTED)
        with contextlib.suppress(Exception):
            await asyncio.shield(a.streamer.fail(INTERRUPTED, a.text.strip()))

    async def _failed_with(self, a: _Attempt, exc: KoalabotError) -> AnswerResult:
        """A failure with a message for the user (the backend, the budget, the store)."""
        status = "too_long" if isinstance(exc, PromptTooLongError) else "failed"
        if isinstance(exc, BackendError):
            self.metrics.backend_errors.labels(type(exc).__name__).inc()
        self.metrics.edits.labels(a.where.platform).inc(a.streamer.edit_calls)
        partial = exc.partial if isinstance(exc, BackendError) and exc.partial else a.text
        log.warning(
            "answer %s failed: %s message=%d conversation=%d total=%.3fs",
            a.answer_id,
            exc.__class__.__name__,
            a.parent_id,
            a.conversation_id,
            a.elapsed(),
        )
        # A store that failed, or a prompt too long, would fail the same way again at once.
        retry = not isinstance(exc, (PromptTooLongError, StoreError))
        result = await self._failed(a, status, partial, exc.user_message, retry)
        return dataclasses.replace(result, error=type(exc).__name__)

    async def _failed(
        self, a: _Attempt, status: str, partial: str, notice: str, retry: bool = True
    ) -> AnswerResult:
        """Store the partial answer as `failed` and turn the placeholder into ``notice`` (with
        the way to retry it, when ``retry``)."""
        await self._give_up(a, "failed", partial, notice)
        again = a.answer_id if retry else None
        if again is not None:
            notice = retry_notice(notice, a.where.platform)
        try:
            await a.streamer.fail(notice, partial.strip(), again)
        except Exception:
            log.warning("could not show the failure notice", exc_info=True)
            await notify(a.streamer.sink, notice)
        return AnswerResult(status, a.answer_id, a.parent_id, partial.strip(), a.dropped, notice)

    async def _give_up(self, a: _Attempt, status: str, partial: str, error: str) -> None:
        if a.answer_id is None:  # it never got its row: nothing to mark
            return
        record = GenerationRecord(
            prompt=a.prompt,
            template=self.template.name,
            parameters=self.params.as_dict(),
            dropped_turns=a.dropped,
            error=error,
        )
        try:
            await asyncio.shield(
                self.repo.finish_answer(
                    a.answer_id, partial.strip(), status, record, model=a.model or None
                )
            )
        except Exception:
            log.exception("could not mark answer %d %s", a.answer_id, status)

    # --- small parts ------------------------------------------------------------------------------

    def _observe(self, a: _Attempt, completion: Completion) -> None:
        m = self.metrics
        m.edits.labels(a.where.platform).inc(a.streamer.edit_calls)
        m.duration.observe(a.elapsed())
        if completion.time_to_first_token is not None:
            m.ttft.observe(completion.time_to_first_token)
            streaming = completion.total_time - completion.time_to_first_token
            if completion.generated_tokens and streaming > 0:
                m.tokens_per_second.observe(completion.generated_tokens / streaming)

    def _sign(self, a: _Attempt) -> str:
        """Which model answered, when the operator shows it (blind by default)."""
        return f"_(model: {a.model})_" if self.show_model and a.model else ""

    def _clean(self, text: str) -> str:
        """The answer as stored: stop sequences TGI leaves in the text removed, whitespace cut."""
        answer = text.strip()
        for stop in self.template.stop:
            if answer.endswith(stop):
                answer = answer[: -len(stop)].rstrip()
        return answer

    async def prompt(
        self,
        conversation_id: int,
        upto_id: int,
        tail: ThreadPage | None = None,
        model: str = "",
    ) -> ThreadPrompt:
        """The prompt for answering message ``upto_id`` by ``model`` (``tail``: the thread's
        newest page, when read already)."""
        return await self.prompts.build(conversation_id, upto_id, tail, model)


__all__ = ["Answerer"]
