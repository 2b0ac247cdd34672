"""One model server: one pooled aiohttp session for the life of the process, and its HTTP calls.

The stock ``text_generation.AsyncClient`` opens a new session, so a new TCP (and TLS)
connection, for every call; here each endpoint keeps one session whose connections are reused,
and counts the connections it opens so reuse can be checked. What is called and how the answer
reads depends on the endpoint's wire (wire.py: TGI, or OpenAI-compatible completions).
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson

from koalabot.backend.error_map import error_from_body
from koalabot.backend.wire import TGIWire, Wire
from koalabot.errors import BackendError, BackendUnavailableError, TokenizerUnavailableError

log = logging.getLogger(__name__)

#: Longest error body read from a failed response (a proxy's HTML page can be large).
MAX_ERROR_BODY = 64 * 1024


class Endpoint:
    """A model server's base URL with its session, health flag and the requests in flight."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float,
        ssl: ssl_module.SSLContext | bool | None,
        on_down: Callable[[Endpoint], None],
        wire: Wire | None = None,
        api_key: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        #: The protocol spoken; set before first use (the backend may find it out by probing).
        self.wire: Wire = wire or TGIWire()
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.healthy = True
        self.in_flight = 0
        self.connections_opened = 0
        self.requests = 0
        self._connect_timeout = connect_timeout
        self._probe_timeout = max(connect_timeout, 1.0)
        self._ssl: ssl_module.SSLContext | bool = True if ssl is None else ssl
        self._on_down = on_down
        self._session: aiohttp.ClientSession | None = None
        self._info: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<Endpoint {self.url} healthy={self.healthy} in_flight={self.in_flight}>"

    @property
    def session(self) -> aiohttp.ClientSession:
        """The endpoint's one session, made on first use (it needs a running event loop)."""
        if self._session is None:
            tracing = aiohttp.TraceConfig()
            tracing.on_connection_create_end.append(self._count_connection)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0),
                # Only connecting has a fixed limit; the stream has first-token and idle limits.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
                trace_configs=[tracing],
                headers=self._headers,
            )
        return self._session

    async def _count_connection(
        self,
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceConnectionCreateEndParams,
    ) -> None:
        self.connections_opened += 1

    async def open_stream(self, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """POST a generation request; the 200 response whose body is the event stream."""
        self.requests += 1
        try:
            response = await self.session.post(self.url + self.wire.stream_path, json=body)
        except aiohttp.ClientError as exc:
            raise self._connection_error(exc) from exc
        if response.status != 200:
            raise await self._status_error(response)
        if response.content_type != "text/event-stream":
            response.close()
            log.error("%s answered %s, not an event stream", self.url, response.content_type)
            raise self.not_this_kind(self.wire.stream_path)
        return response

    async def get_json(self, path: str) -> Any:
        """GET a JSON document (``/info``, ``/v1/models``)."""
        return await self.post_json(path, None, method="GET")

    async def count(self, text: str) -> int:
        """Tokens in ``text`` as a prompt (BOS included); raises TokenizerUnavailableError when
        the server cannot tokenize."""
        return await self.wire.count(self, text)

    async def info(self) -> dict[str, Any]:
        """The server's model and limits, TGI-shaped (``/info``, or what an OpenAI-compatible
        server says), remembered until the endpoint goes down (it may come back another model)."""
        if self._info is None:
            self._info = await self.wire.info(self)
        return self._info

    def remember_info(self, info: dict[str, Any]) -> None:
        """Keep an ``/info`` already read (by the probe that found the server's kind)."""
        self._info = info

    async def try_json(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """The JSON answer, or None when the server answers another status or not JSON (a
        route it may not have); connection failures still raise."""
        self.requests += 1
        try:
            async with self.session.request(method, self.url + path, json=body) as response:
                raw = await response.read()
                if response.status != 200:
                    return None
        except aiohttp.ClientError as exc:
            raise self._connection_error(exc) from exc
        try:
            return orjson.loads(raw)
        except ValueError:
            return None

    async def model_id(self) -> str | None:
        """The served model's id, or None when ``/info`` cannot say."""
        known = getattr(self.wire, "model", None)
        if isinstance(known, str) and known:
            return known  # an OpenAI-compatible server's, learnt before the first request
        try:
            model_id = (await self.info()).get("model_id")
        except BackendError:
            return None
        return model_id if isinstance(model_id, str) else None

    async def probe(self) -> bool:
        """Does ``/health`` answer 200 within the probe timeout? Never raises."""
        try:
            async with asyncio.timeout(self._probe_timeout):
                async with self.session.get(self.url + self.wire.health_path) as response:
                    await response.read()
                    return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    def forget_info(self) -> None:
        """Drop the cached ``/info`` (the server may restart with another model)."""
        self._info = None

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()

    @property
    def closed(self) -> bool:
        """True once the session was closed (or never opened)."""
        return self._session is None or self._session.closed

    async def post_json(
        self,
        path: str,
        body: dict[str, Any] | None,
        *,
        method: str = "POST",
        no_tokenizer_on_404: bool = False,
    ) -> Any:
        """The JSON answer of a call that must succeed (a BackendError otherwise)."""
        self.requests += 1
        try:
            response = await self.session.request(method, self.url + path, json=body)
        except aiohttp.ClientError as exc:
            raise self._connection_error(exc) from exc
        if response.status == 404 and no_tokenizer_on_404:
            # TGI says {"error":"No fast tokenizer available"}; older servers have no route.
            response.close()
            raise TokenizerUnavailableError()
        if response.status != 200:
            raise await self._status_error(response)
        try:
            raw = await response.read()
        except aiohttp.ClientError as exc:
            raise self._connection_error(exc) from exc
        try:
            return orjson.loads(raw)  # a /tokenize answer lists every token: big
        except ValueError:
            raise self.not_this_kind(path) from None

    async def _status_error(self, response: aiohttp.ClientResponse) -> BackendError:
        try:
            raw = await response.content.read(MAX_ERROR_BODY)
        except aiohttp.ClientError:
            raw = b""
        finally:
            response.close()
        exc = error_from_body(response.status, raw)
        exc.retry_after = _retry_after(response.headers.get("Retry-After"))
        detail = " ".join(raw[:300].decode("utf-8", "replace").split())
        log.warning("%s answered HTTP %d: %s", self.url, response.status, detail)
        if response.status in (502, 503, 504):
            self._on_down(self)
        return exc

    def _connection_error(self, cause: aiohttp.ClientError) -> BackendError:
        exc = BackendUnavailableError()
        if isinstance(cause, aiohttp.ClientSSLError):
            exc.retryable = False  # a certificate does not fix itself between retries
        if isinstance(cause, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
            self._on_down(self)
        # Otherwise (a dropped keep-alive connection, a reset): the server may be fine.
        log.warning("%s: %s: %s", self.url, type(cause).__name__, cause)
        return exc

    def not_this_kind(self, path: str) -> BackendError:
        """The error for an answer that is not what this kind of server sends."""
        log.error(
            "%s%s did not answer as a %s server does; is KOALABOT_MODEL_API right?",
            self.url,
            path,
            self.wire.kind,
        )
        exc = BackendUnavailableError()
        exc.retryable = False
        return exc


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the delta form; an HTTP date is rare from model servers)."""
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None
