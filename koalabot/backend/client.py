"""The TGI backend the engine talks to: streams, info, token counts and health, over pooled
connections to one or more endpoints."""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from text_generation.errors import ValidationError as TGIValidationError
from text_generation.types import Request

from koalabot.backend.params import GenerationParams
from koalabot.backend.pool import EndpointPool, EndpointStatus
from koalabot.backend.stream import Completion, GenerationStream, StreamTimeouts
from koalabot.errors import BackendRejectedError, GenerationFailedError

if TYPE_CHECKING:
    from koalabot.config import Settings


class Backend:
    """A client for one or more TGI servers that keeps one pooled session per server.

    Generation streams from ``/generate_stream`` with two limits instead of one total
    deadline: ``first_token_timeout`` from the start of a stream (retries included) to its
    first token, and ``idle_timeout`` between two tokens (keep-alive comments do not count).
    Overload (429, 503, ``overloaded``), refused connections and gateway errors are retried
    ``retries`` times, only before the first token, with exponential backoff from
    ``retry_base_delay`` and jitter, on the healthy endpoint with the fewest requests in
    flight; an endpoint that fails is skipped until its ``/health`` passes (probed every
    ``health_check_interval``). Use ``async with`` or call ``close()``. ``count`` makes it a
    koalabot.prompt.budget TokenCounter.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        connect_timeout: float = 5.0,
        first_token_timeout: float = 60.0,
        idle_timeout: float = 30.0,
        retries: int = 3,
        retry_base_delay: float = 0.25,
        health_check_interval: float = 5.0,
        ssl: ssl_module.SSLContext | bool | None = None,
    ) -> None:
        self._pool = EndpointPool(
            urls,
            connect_timeout=connect_timeout,
            retries=retries,
            retry_base_delay=retry_base_delay,
            health_check_interval=health_check_interval,
            ssl=ssl,
        )
        self._timeouts = StreamTimeouts(first_token=first_token_timeout, idle=idle_timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> Backend:
        """The backend for the configured endpoints and limits."""
        return cls(
            settings.endpoints,
            connect_timeout=settings.connect_timeout,
            first_token_timeout=settings.first_token_timeout,
            idle_timeout=settings.idle_timeout,
            retries=settings.retries,
            retry_base_delay=settings.retry_base_delay,
            health_check_interval=settings.health_check_interval,
        )

    def stream(self, prompt: str, params: GenerationParams) -> GenerationStream:
        """A stream of the answer to ``prompt``; nothing is sent before iteration starts.

        Raises BackendRejectedError at once when the request is invalid (empty prompt,
        ``top_p`` of 1 and the like: text-generation's own checks).
        """
        try:
            request = Request(inputs=prompt, parameters=params.to_tgi())
        except TGIValidationError as exc:
            raise BackendRejectedError(f"Invalid generation request: {exc}") from exc
        # /generate_stream has no `stream` field; that flag belongs to POST /.
        body = request.model_dump(exclude={"stream"})
        return GenerationStream(self._pool, body, params.stop, self._timeouts)

    async def generate(self, prompt: str, params: GenerationParams) -> Completion:
        """The whole answer at once (the same stream, read to its end)."""
        async with self.stream(prompt, params) as stream:
            async for _ in stream:
                pass
        if stream.completion is None:  # pragma: no cover - a finished stream has one
            raise GenerationFailedError(partial=stream.text)
        return stream.completion

    async def info(self) -> dict[str, Any]:
        """``/info`` of a healthy endpoint (cached per endpoint)."""
        return await self._pool.call(lambda e: e.info(), deadline=self._deadline())

    async def model_id(self) -> str | None:
        """The served model's id from ``/info``."""
        model_id = (await self.info()).get("model_id")
        return model_id if isinstance(model_id, str) else None

    async def count(self, text: str) -> int:
        """Tokens in ``text`` sent as ``inputs``, the BOS TGI adds included (``/tokenize``).

        Raises TokenizerUnavailableError when the server has no fast tokenizer, so
        koalabot.prompt.budget.CachedCounter falls back to its estimate.
        """
        if not text:
            return 1  # TGI rejects empty inputs; an empty piece would be the BOS alone.
        tokens = await self._pool.call(lambda e: e.tokenize(text), deadline=self._deadline())
        return len(tokens)

    async def health(self) -> dict[str, bool]:
        """Probe every endpoint's ``/health`` now: {url: healthy}."""
        return await self._pool.health()

    def status(self) -> list[EndpointStatus]:
        """Each endpoint's health, requests in flight and connections opened so far."""
        return self._pool.status()

    @property
    def connections_opened(self) -> int:
        """TCP connections opened to all endpoints so far (reuse keeps this low)."""
        return sum(e.connections_opened for e in self._pool.endpoints)

    @property
    def closed(self) -> bool:
        """True after ``close()``."""
        return self._pool.closed

    async def close(self) -> None:
        """Close every session and stop the health probes."""
        await self._pool.close()

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self._timeouts.first_token
