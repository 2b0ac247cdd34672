"""One streamed answer: the text as it arrives, and what is known once it ends."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

from koalabot.backend.endpoint import Endpoint
from koalabot.backend.params import AnswerCap
from koalabot.backend.pool import EndpointPool
from koalabot.backend.sse import SSEError, SSEReader
from koalabot.backend.wire import Piece, Wire
from koalabot.errors import (
    AnswerCutOffError,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    GenerationFailedError,
)


@dataclass
class Completion:
    """What is known when a stream has ended: the generation record's facts."""

    #: The answer as streamed, without a stop sequence that ended it.
    text: str
    #: TGI's "length", "eos_token" or "stop_sequence"; OpenAI-compatible "stop" or "length".
    finish_reason: str | None
    generated_tokens: int | None
    endpoint: str
    model_id: str | None
    time_to_first_token: float | None
    total_time: float
    #: Input tokens as the server counted them (TGI ≥ 2's last event, an OpenAI usage chunk).
    prompt_tokens: int | None = None


@dataclass(frozen=True)
class StreamTimeouts:
    """The two limits of a stream: until the first token, and between two tokens."""

    first_token: float
    idle: float


class GenerationStream:
    """Async iterator of the answer's text as it is generated (special tokens such as ``</s>``
    skipped), from one request to one endpoint.

    Nothing is sent until iteration starts. Failures before the first token are retried (see
    EndpointPool.run); after it they raise a BackendError whose ``partial`` is ``text``. A
    stop sequence is never handed out: text that may be the start of one is held back until
    the next token tells, and one that ends the answer is dropped. An answer that reaches
    ``cap`` (a server that ignores max_new_tokens) ends with AnswerCutOffError.

    Work per token does not grow with the answer: pieces are kept in a list and joined only
    when ``text`` is read, and only the held-back tail is searched for a stop sequence.
    """

    def __init__(
        self,
        pool: EndpointPool,
        body: Callable[[Wire], dict[str, Any]],
        stop: tuple[str, ...],
        timeouts: StreamTimeouts,
        wire: Callable[[], Awaitable[Wire]],
        cap: AnswerCap,
    ) -> None:
        self.endpoint = ""
        self.completion: Completion | None = None
        self._parts: list[str] = []  # the text handed out so far
        self._length = 0
        self._cap = cap
        self._pool = pool
        self._make_body = body
        self._body: dict[str, Any] = {}
        self._resolve_wire = wire
        self._usage: Piece | None = None
        self._stop = stop
        self._stop_tail = _stop_prefixes(stop)
        self._longest_stop = max(map(len, stop), default=0)
        self._timeouts = timeouts
        self._held = ""  # received, not handed out: it may be the start of a stop sequence
        self._pieces = self._run()

    @property
    def text(self) -> str:
        """The text handed out so far."""
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def __aiter__(self) -> AsyncIterator[str]:
        return self._pieces

    async def aclose(self) -> None:
        """Stop early: the response is closed and the endpoint's slot freed."""
        await self._pieces.aclose()

    async def __aenter__(self) -> GenerationStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self) -> AsyncGenerator[str, None]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        wire = await self._resolve_wire()
        self._body = self._make_body(wire)
        endpoint, (response, reader, event) = await self._pool.run(
            self._first_event, deadline=started + self._timeouts.first_token
        )
        self.endpoint = endpoint.url
        first_token_at = loop.time()
        try:
            events = 0
            while True:
                events += 1
                piece = self._take(event)
                if piece:
                    self._hand(piece)
                    yield piece
                self._check_cap(events)
                if event.final:
                    break
                event = await self._next_token(reader, endpoint.wire)
            finished_at = loop.time()
            rest = self._finish(event, endpoint.wire)
            if rest:
                self._hand(rest)
                yield rest
            await self._drain(reader, endpoint.wire)
            model_id = await self._model_id(endpoint)
            usage = self._usage or event
            self.completion = Completion(
                text=self.text,
                finish_reason=event.finish_reason,
                generated_tokens=usage.generated_tokens or event.generated_tokens,
                endpoint=endpoint.url,
                model_id=model_id,
                time_to_first_token=first_token_at - started,
                total_time=finished_at - started,
                prompt_tokens=usage.prompt_tokens or event.prompt_tokens,
            )
        finally:
            if response.content.at_eof():
                response.release()
            else:
                response.close()
            self._pool.done(endpoint)

    async def _first_event(
        self, endpoint: Endpoint
    ) -> tuple[aiohttp.ClientResponse, SSEReader, Piece]:
        response = await endpoint.open_stream(self._body)
        try:
            reader = SSEReader(response.content.iter_any())
            data = await self._wait_for_event(reader, first=True)
            event = self._decode(endpoint.wire, data)
        except BaseException:
            response.close()
            raise
        return response, reader, event

    async def _next_token(self, reader: SSEReader, wire: Wire) -> Piece:
        data = reader.buffered_event()
        if data is None:  # only waiting for the network needs a timer
            try:
                async with asyncio.timeout(self._timeouts.idle):
                    data = await self._wait_for_event(reader, first=False)
            except TimeoutError:
                raise BackendTimeoutError(partial=self.text) from None
        return self._decode(wire, data)

    def _decode(self, wire: Wire, data: str) -> Piece:
        try:
            return wire.decode(data, "")
        except BackendError as exc:  # the partial text is joined only when there is an error
            exc.partial = self.text
            raise

    async def _wait_for_event(self, reader: SSEReader, *, first: bool) -> str:
        try:
            data = await reader.next_event()
        except aiohttp.ClientError as exc:
            # Dropped before any token: nothing was shown, so the request may be retried.
            error: BackendError = (
                BackendUnavailableError() if first else GenerationFailedError(partial=self.text)
            )
            raise error from exc
        except SSEError as exc:
            raise GenerationFailedError(partial=self.text) from exc
        if data is None:
            raise GenerationFailedError(partial=self.text)
        return data

    def _take(self, event: Piece) -> str:
        """The text of ``event`` that can be handed out now (within the cap's characters).

        Text handed out never ends in the start of a stop sequence, so a stop sequence that
        matches at the end begins in the held-back text: only that needs searching.
        """
        received = self._held + event.text
        safe = len(received)
        if self._stop_tail is not None:
            # The leftmost match from here is the longest held-back piece.
            held = self._stop_tail.search(received, max(0, safe - self._longest_stop))
            if held is not None:
                safe = held.start()
        self._held = received[safe:]
        return received[: min(safe, self._cap.chars - self._length)]

    def _hand(self, piece: str) -> None:
        self._parts.append(piece)
        self._length += len(piece)

    def _check_cap(self, events: int) -> None:
        if events >= self._cap.tokens or self._length >= self._cap.chars:
            raise AnswerCutOffError(partial=self.text)

    def _finish(self, event: Piece, wire: Wire) -> str:
        """What is left of the answer after the last event: the held-back text, unless it is
        the stop sequence that ended the answer."""
        if event.finish_reason in wire.stop_reasons:
            for stop in self._stop:
                if stop and self._held.endswith(stop):
                    return self._held[: -len(stop)]
        return self._held

    async def _model_id(self, endpoint: Endpoint) -> str | None:
        """The endpoint's model id (``/info`` is read once per endpoint), None if it cannot say."""
        try:
            async with asyncio.timeout(self._timeouts.idle):
                return await endpoint.model_id()
        except TimeoutError:
            return None

    async def _drain(self, reader: SSEReader, wire: Wire) -> None:
        """Read to the end of the response, so its connection goes back to the pool; keep a
        usage chunk that comes after the last text (OpenAI-compatible servers)."""
        try:
            async with asyncio.timeout(self._timeouts.idle):
                while (data := await reader.next_event()) is not None:
                    self._keep_usage(data, wire)
        except (TimeoutError, aiohttp.ClientError, SSEError):
            pass

    def _keep_usage(self, data: str, wire: Wire) -> None:
        try:
            piece = wire.decode(data, "")
        except BackendError:
            return
        if piece.prompt_tokens is not None or piece.generated_tokens is not None:
            self._usage = piece


@functools.lru_cache(maxsize=64)
def _stop_prefixes(stops: tuple[str, ...]) -> re.Pattern[str] | None:
    """A pattern matching, at the end of a text, the longest piece that is, or may begin, one of
    ``stops``: every prefix of every stop sequence."""
    prefixes = {stop[:k] for stop in stops for k in range(1, len(stop) + 1)}
    if not prefixes:
        return None
    alternatives = sorted(prefixes, key=len, reverse=True)
    return re.compile("(?:" + "|".join(map(re.escape, alternatives)) + r")\Z")
