"""One TGI server: one pooled aiohttp session for the life of the process, and its HTTP calls.

The stock ``text_generation.AsyncClient`` opens a new session, so a new TCP (and TLS)
connection, for every call; here each endpoint keeps one session whose connections are reused,
and counts the connections it opens so reuse can be checked.
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
from koalabot.errors import BackendError, BackendUnavailableError, TokenizerUnavailableError

log = logging.getLogger(__name__)

#: Generation goes to /generate_stream: the same route and body in every TGI version, with no
#: `stream` flag and no `return_full_text` default that depends on the model's pipeline tag
#: (POST / turns it on for a model without one, like a local Koala checkpoint; reference §1.2).
GENERATE_STREAM = "/generate_stream"
#: Longest error body read from a failed response (a proxy's HTML page can be large).
MAX_ERROR_BODY = 64 * 1024


class Endpoint:
    """A TGI base URL with its session, health flag and the requests in flight to it."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float,
        ssl: ssl_module.SSLContext | bool | None,
        on_down: Callable[[Endpoint], None],
    ) -> None:
        self.url = url.rstrip("/")
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
            response = await self.session.post(self.url + GENERATE_STREAM, json=body)
        except aiohttp.ClientError as exc:
            raise self._connection_error(exc) from exc
        if response.status != 200:
            raise await self._status_error(response)
        if response.content_type != "text/event-stream":
            response.close()
            log.error("%s answered %s, not an event stream", self.url, response.content_type)
            raise self._not_tgi(GENERATE_STREAM)
        return response

    async def get_json(self, path: str) -> Any:
        """GET a JSON document (``/info``)."""
        return await self._json("GET", path, None)

    async def tokenize(self, text: str) -> list[Any]:
        """``/tokenize``: the tokens of ``text`` as ``inputs`` (BOS included); raises
        TokenizerUnavailableError when the server has no fast tokenizer (404)."""
        tokens = await self._json("POST", "/tokenize", {"inputs": text}, no_tokenizer_on_404=True)
        if not isinstance(tokens, list):
            raise self._not_tgi("/tokenize")
        return tokens

    async def info(self) -> dict[str, Any]:
        """``/info``, remembered until the endpoint goes down (it may come back another model)."""
        if self._info is None:
            info = await self.get_json("/info")
            if not isinstance(info, dict):
                raise self._not_tgi("/info")
            self._info = info
        return self._info

    async def model_id(self) -> str | None:
        """The served model's id, or None when ``/info`` cannot say."""
        try:
            model_id = (await self.info()).get("model_id")
        except BackendError:
            return None
        return model_id if isinstance(model_id, str) else None

    async def probe(self) -> bool:
        """Does ``/health`` answer 200 within the probe timeout? Never raises."""
        try:
            async with asyncio.timeout(self._probe_timeout):
                async with self.session.get(self.url + "/health") as response:
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

    async def _json(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        no_tokenizer_on_404: bool = False,
    ) -> Any:
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
            raise self._not_tgi(path) from None

    async def _status_error(self, response: aiohttp.ClientResponse) -> BackendError:
        try:
            raw = await response.content.read(MAX_ERROR_BODY)
        except aiohttp.ClientError:
            raw = b""
        finally:
            response.close()
        exc = error_from_body(response.status, raw)
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

    def _not_tgi(self, path: str) -> BackendError:
        log.error("%s%s did not answer TGI's JSON; is this a TGI server?", self.url, path)
        exc = BackendUnavailableError()
        exc.retryable = False
        return exc
