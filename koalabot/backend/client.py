"""The model backend the engine talks to: streams, info, token counts and health, over pooled
connections to one or more endpoints that speak TGI's protocol or OpenAI-compatible completions.

The server kind is given (``api="tgi"``/``"openai"``) or found on first use (``"auto"``: ``GET
/info`` answers on TGI only, else ``GET /v1/models``); every endpoint of one backend is taken to
be of the kind the first one that answered is. Finding out costs one request per process, and
TGI's ``/info`` read then is kept.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from text_generation.errors import ValidationError as TGIValidationError

from koalabot.backend.endpoint import Endpoint
from koalabot.backend.local_tokenizer import LocalTokenizer
from koalabot.backend.openai_wire import OpenAIWire
from koalabot.backend.params import AnswerCap, GenerationParams
from koalabot.backend.pool import EndpointPool, EndpointStatus
from koalabot.backend.stream import Completion, GenerationStream, StreamTimeouts
from koalabot.backend.wire import TGIWire, Wire
from koalabot.errors import (
    BackendError,
    BackendRejectedError,
    BackendUnavailableError,
    GenerationFailedError,
)

if TYPE_CHECKING:
    from koalabot.config import Settings


log = logging.getLogger(__name__)
T = TypeVar("T")

ApiKind = Literal["auto", "tgi", "openai"]
#: The longest the start-up check waits for a model server (one attempt each, no retries).
CHECK_TIMEOUT = 5.0


class Backend:
    """A client for one or more model servers that keeps one pooled session per server.

    Generation streams from ``/generate_stream`` with two limits instead of one total
    deadline: ``first_token_timeout`` from the start of a stream (retries included) to its
    first token, and ``idle_timeout`` between two tokens (keep-alive comments do not count).
    Overload (429, 503, ``overloaded``), refused connections and gateway errors are retried
    ``retries`` times, only before the first token, with exponential backoff from
    ``retry_base_delay`` and jitter, on the healthy endpoint with the fewest requests in
    flight; an endpoint that fails is skipped until its ``/health`` passes (probed every
    ``health_check_interval``). Use ``async with`` or call ``close()``. ``count`` makes it a
    koalabot.prompt.budget TokenCounter. ``api_key`` goes as ``Authorization: Bearer`` to every
    call; ``model`` picks one of an OpenAI-compatible server's models; ``context_tokens`` is the
    context window when such a server does not state it; ``tokenizer`` is a local
    ``tokenizer.json`` that counts tokens instead of the server.
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
        api: ApiKind = "tgi",
        api_key: str | None = None,
        model: str | None = None,
        context_tokens: int | None = None,
        tokenizer: str | None = None,
    ) -> None:
        self._pool = EndpointPool(
            urls,
            connect_timeout=connect_timeout,
            retries=retries,
            retry_base_delay=retry_base_delay,
            health_check_interval=health_check_interval,
            ssl=ssl,
            api_key=api_key,
        )
        self._timeouts = StreamTimeouts(first_token=first_token_timeout, idle=idle_timeout)
        self._openai = OpenAIWire(model, context_tokens)
        wires: dict[str, Wire] = {"tgi": TGIWire(), "openai": self._openai}
        self._wire: Wire | None = wires.get(api)
        if self._wire is not None:
            self._pool.set_wire(self._wire)
        self._finding = asyncio.Lock()
        #: Retries for the calls made now (None: the configured number); 0 during ``check``.
        self._retries_now: int | None = None
        self._ready: Wire | None = self._wire if api == "tgi" else None
        self._local = LocalTokenizer.load(tokenizer) if tokenizer else None

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
            api=settings.model_api,
            api_key=settings.model_api_key.get_secret_value() if settings.model_api_key else None,
            model=settings.model,
            context_tokens=settings.context_tokens,
            tokenizer=settings.tokenizer,
        )

    @property
    def kind(self) -> str | None:
        """ "tgi" or "openai" once known (None while ``auto`` has not probed yet)."""
        return self._wire.kind if self._wire is not None else None

    async def wire(self) -> Wire:
        """The protocol the servers speak, probed once when not given."""
        if self._ready is not None:
            return self._ready
        async with self._finding:
            if self._ready is None:
                wire = self._wire
                if wire is None:
                    wire = await self._call(self._probe)
                self._pool.set_wire(wire)
                self._wire = wire
                if wire is self._openai:  # its requests name the model: learn which first
                    await self._call(self._openai.prepare)
                self._ready = wire
                return wire
        return self._ready

    async def _probe(self, endpoint: Endpoint) -> Wire:
        info = await endpoint.try_json("GET", "/info", None)
        if isinstance(info, dict) and ("max_total_tokens" in info or "model_id" in info):
            endpoint.remember_info(info)
            log.info("%s speaks TGI's protocol (GET /info answered)", endpoint.url)
            return TGIWire()
        models = await endpoint.try_json("GET", "/v1/models", None)
        if isinstance(models, dict) and isinstance(models.get("data"), list):
            log.info(
                "%s speaks OpenAI-compatible completions (GET /v1/models answered; no /info)",
                endpoint.url,
            )
            return self._openai
        log.error("%s answers neither GET /info (TGI) nor GET /v1/models", endpoint.url)
        exc = BackendUnavailableError()
        exc.retryable = False
        raise exc

    def stream(self, prompt: str, params: GenerationParams) -> GenerationStream:
        """A stream of the answer to ``prompt``; nothing is sent before iteration starts.

        Raises BackendRejectedError at once when the request is invalid for TGI (empty prompt,
        ``top_p`` of 1 and the like: text-generation's own checks), or, while the server kind is
        not known yet, when the stream starts.
        """

        def body(wire: Wire) -> dict[str, Any]:
            try:
                return wire.body(prompt, params)
            except TGIValidationError as exc:
                raise BackendRejectedError(f"Invalid generation request: {exc}") from exc

        if self._wire is not None:
            body(self._wire)  # fail now, before any stream exists
        cap = AnswerCap.of(params)
        return GenerationStream(self._pool, body, params.stop, self._timeouts, self.wire, cap)

    async def generate(self, prompt: str, params: GenerationParams) -> Completion:
        """The whole answer at once (the same stream, read to its end)."""
        async with self.stream(prompt, params) as stream:
            async for _ in stream:
                pass
        if stream.completion is None:  # pragma: no cover - a finished stream has one
            raise GenerationFailedError(partial=stream.text)
        return stream.completion

    async def info(self) -> dict[str, Any]:
        """``/info`` of a healthy endpoint (cached per endpoint); for an OpenAI-compatible server
        the same keys (``model_id``, ``max_input_tokens``, ``max_total_tokens``) from what it
        states, else KOALABOT_CONTEXT_TOKENS (ConfigError when neither says)."""
        await self.wire()
        return await self._call(lambda e: e.info())

    async def check(self) -> None:
        """At start: find the server's kind and limits now, so a missing setting stops the bot
        with one line (ConfigError) instead of failing every answer; a server that is down is
        only logged — the bot starts, and answers once the server is back."""
        if self.kind == "tgi":
            return  # TGI's /info always states its limits: nothing to check before answering
        self._retries_now = 0
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                info = await self.info()
        except (BackendError, TimeoutError) as exc:
            log.warning("model server not checked at start: %s", type(exc).__name__)
            return
        finally:
            self._retries_now = None
        log.info("model server: %s API, model %s", self.kind, info.get("model_id"))

    async def model_id(self) -> str | None:
        """The served model's id from ``/info``."""
        model_id = (await self.info()).get("model_id")
        return model_id if isinstance(model_id, str) else None

    async def count(self, text: str) -> int:
        """Tokens in ``text`` sent as a prompt, the BOS the server adds included: from the local
        tokenizer when one is configured, else the server's tokenize route.

        Raises TokenizerUnavailableError when the server has no tokenizer, so
        koalabot.prompt.budget.CachedCounter falls back to its estimate.
        """
        if self._local is not None:
            return self._local.count(text)
        if not text:
            return 1  # TGI rejects empty inputs; an empty piece would be the BOS alone.
        await self.wire()
        return await self._pool.call(lambda e: e.count(text), deadline=self._deadline())

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

    async def _call(self, op: Callable[[Endpoint], Awaitable[T]]) -> T:
        return await self._pool.call(op, deadline=self._deadline(), retries=self._retries_now)

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self._timeouts.first_token
