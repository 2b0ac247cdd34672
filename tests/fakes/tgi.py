"""A fake text-generation-inference server on a real socket, faithful to TGI's wire protocol.

It follows reference/tgi-and-koala.md §1: `POST /` (a one-element JSON array, or SSE with
`"stream": true`), `/generate`, `/generate_stream` (`data:{json}` frames with no space,
blank-line separated, `:` keep-alive comments after silence), `/info` (new or old field names),
`/health`, `/tokenize`, TGI's error JSON and statuses, its parameter validation and its 422
texts for inputs that are too long. Replies are scripted; faults are injected.

    fake = FakeTGI(token_delay=0.01)
    await fake.start()                   # fake.url is http://127.0.0.1:<port>
    fake.replies.append("Hello there!")  # the next answer (else a reply derived from the prompt)
    fake.fault = Fault("stall", after_tokens=3)
    fake.fault = Fault("endless")        # streams the reply again and again, never a last event
    ...
    fake.prompts                         # the exact `inputs` received, in order
    await fake.stop()                    # the port closes: connections are refused

Run it by hand to try the bot without a GPU:
    python -m tests.fakes.tgi --port 8080 [--token-delay S] [--reply TEXT]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import re
import signal
import ssl
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

FaultKind = Literal[
    "overloaded",  # TGI's own: 429 JSON, or an `overloaded` event on a 200 stream
    "rate_limited",  # a gateway in front: 429 {"error": "Rate limit reached..."} on any route
    "loading",  # a Hugging Face endpoint warming up: 503 {"error": ..., "estimated_time": ...}
    "html502",  # a proxy whose upstream is gone: 502 text/html
    "stall",  # after `after_tokens` tokens, silence (keep-alive comments only)
    "error",  # after `after_tokens` tokens, a `generation` error event (424 when not streaming)
    "incomplete",  # after `after_tokens` tokens, HEAD's `incomplete_generation_stream` event
    "disconnect",  # after `after_tokens` tokens, the TCP connection is cut
    "endless",  # a server that ignores max_new_tokens and EOS: the reply's tokens, forever
]


@dataclass
class Fault:
    """What goes wrong with the next `times` generation requests (None: all, until cleared)."""

    kind: FaultKind
    times: int | None = 1
    after_tokens: int = 0


@dataclass(frozen=True)
class ReceivedRequest:
    """One request the fake received (its `/_fake/` routes excepted)."""

    method: str
    path: str
    body: Any  # the parsed JSON body, or None

    @property
    def inputs(self) -> str | None:
        """The prompt of a generation or tokenize request."""
        return self.body.get("inputs") if isinstance(self.body, dict) else None

    @property
    def parameters(self) -> dict[str, Any]:
        """The `parameters` object as sent ({} when absent)."""
        params = self.body.get("parameters") if isinstance(self.body, dict) else None
        return params if isinstance(params, dict) else {}


# --- tokenizer -------------------------------------------------------------------------------

BOS_ID, EOS_ID = 1, 2
EOS = "</s>"
# A word takes the space before it, as LLaMA's "▁word" pieces do; digits and other symbols are
# one token each; `</s>` and `<s>` are special.
_TOKEN = re.compile(r"</s>|<s>| ?[A-Za-z]+| ?\d| ?(?!</?s>)[^\sA-Za-z\d]|\s")
# With `per_character`: a tokenizer with a far smaller vocabulary, every character a token
# (about five times as many tokens for English as the default's one per word).
_CHARACTER = re.compile(r"</s>|<s>|.", flags=re.DOTALL)


@dataclass(frozen=True)
class Token:
    """One token of the fake tokenizer, with its place in the text."""

    id: int
    text: str
    start: int
    stop: int

    @property
    def special(self) -> bool:
        """BOS and EOS are special: TGI leaves them out of `generated_text`."""
        return self.id in (BOS_ID, EOS_ID)


@functools.lru_cache(maxsize=1024)
def tokenize(text: str, per_character: bool = False) -> tuple[Token, ...]:
    """Deterministic tokens of `text`, without the BOS TGI adds."""
    pattern = _CHARACTER if per_character else _TOKEN
    return tuple(
        Token(_token_id(m.group()), m.group(), m.start(), m.end()) for m in pattern.finditer(text)
    )


def count_input_tokens(text: str, per_character: bool = False) -> int:
    """Tokens TGI counts for `inputs`: the BOS plus the text's tokens."""
    return 1 + len(tokenize(text, per_character))


def _token_id(text: str) -> int:
    if text == EOS:
        return EOS_ID
    if text == "<s>":
        return BOS_ID
    return 3 + zlib.crc32(text.encode("utf-8")) % 31997


def default_reply(prompt: str) -> str:
    """A deterministic answer derived from the prompt: it quotes the last user message."""
    turns = re.findall(r"USER:\s*(.*?)\s*GPT:", prompt, flags=re.DOTALL)
    said = turns[-1] if turns else " ".join(prompt.split()[-12:])
    return f" You said: {said[:300]}"


# --- the server ------------------------------------------------------------------------------

_VALIDATION = "Input validation error: "
_OVERLOADED = {"error": "Model is overloaded", "error_type": "overloaded"}
_HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_INPUTS = web.RequestKey("inputs", str)
_INT_FIELDS = ("max_new_tokens", "top_k", "truncate", "seed", "best_of", "top_n_tokens")
_FLOAT_FIELDS = ("temperature", "top_p", "typical_p", "repetition_penalty", "frequency_penalty")
_BOOL_FIELDS = ("do_sample", "details", "decoder_input_details", "watermark", "return_full_text")


class _Rejected(Exception):
    """A request TGI turns away; `status` and `payload` are its answer off a stream."""

    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        super().__init__(payload.get("error"))
        self.status = status
        self.payload = payload


def _invalid(message: str) -> _Rejected:
    return _Rejected(422, {"error": _VALIDATION + message, "error_type": "validation"})


@dataclass
class _Plan:
    """What one generation will send: its tokens, finish reason and texts."""

    tokens: tuple[Token, ...]
    finish_reason: str
    generated_text: str
    input_length: int
    seed: int | None
    details: bool
    #: POST / wraps a whole answer in a one-element array ("to match api-inference").
    in_array: bool


class FakeTGI:
    """A TGI look-alike on 127.0.0.1 (port 0: any free port) for tests and demos."""

    def __init__(
        self,
        *,
        reply: str | Callable[[str], str] | None = None,
        replies: Iterable[str] = (),
        token_delay: float = 0.0,
        keepalive: float = 15.0,
        model_id: str = "koala-13b-fake",
        max_input_tokens: int = 2047,
        max_total_tokens: int = 2048,
        info_style: Literal["v2", "v1"] = "v2",
        tokenizer: bool = True,
        per_character: bool = False,
        max_concurrent_requests: int = 128,
        max_stop_sequences: int = 4,
        pipeline_tag: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        #: Answers to send, first in first out; when empty, `reply` answers.
        self.replies: deque[str] = deque(replies)
        #: The answer when `replies` is empty: a text, or a function of the prompt.
        self.reply: str | Callable[[str], str] = reply if reply is not None else default_reply
        #: Seconds before each token, the first included. With 0 the first token is written
        #: at once and the others together in one write (tokens as fast as can be).
        self.token_delay = token_delay
        #: Seconds of silence after which a stream gets a `:` comment (TGI: 15).
        self.keepalive = keepalive
        #: The fault to inject into the next generation requests, if any.
        self.fault: Fault | None = None
        #: What /health says (False: 503 "unhealthy").
        self.healthy = True
        #: /tokenize works (False: 404 "No fast tokenizer available").
        self.tokenizer = tokenizer
        #: Prompts are tokenized a character a token (/tokenize and the length checks; the
        #: reply still streams a word a token), as another model's tokenizer may count.
        self.per_character = per_character
        self.model_id = model_id
        self.max_input_tokens = max_input_tokens
        self.max_total_tokens = max_total_tokens
        self.info_style = info_style
        self.max_concurrent_requests = max_concurrent_requests
        self.max_stop_sequences = max_stop_sequences
        self.pipeline_tag = pipeline_tag
        #: Every request received, in order.
        self.requests: list[ReceivedRequest] = []
        #: Client connections that sent a request (distinct sockets), since creation.
        self.connections = 0
        self.host = host
        self.port = port
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._in_flight = 0

    # --- life cycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL to give a client (http or https)."""
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen (again on the same port after a stop)."""
        app = web.Application(middlewares=[self._record])
        app.router.add_routes(
            [
                web.get("/", self._health),
                web.get("/health", self._health),
                web.get("/ping", self._health),
                web.get("/info", self._info),
                web.post("/", self._compat_generate),
                web.post("/generate", self._generate),
                web.post("/generate_stream", self._generate_stream),
                web.post("/tokenize", self._tokenize),
                web.get("/_fake/stats", self._stats),
            ]
        )
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.1, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Close the port and every connection; streams in progress are cut."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTGI:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def prompts(self) -> list[str]:
        """The `inputs` of every generation request, in order."""
        return [
            r.inputs
            for r in self.requests
            if r.method == "POST" and r.path in ("/", "/generate", "/generate_stream") and r.inputs
        ]

    @property
    def open_connections(self) -> int:
        """Client connections open right now."""
        self._transports = {t for t in self._transports if not t.is_closing()}
        return len(self._transports)

    # --- routes ----------------------------------------------------------------------------

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if not request.path.startswith("/_fake/"):
            transport = request.transport
            if transport is not None and transport not in self._transports:
                self._transports = {t for t in self._transports if not t.is_closing()}
                self._transports.add(transport)
                self.connections += 1
            body = None
            if request.can_read_body:
                try:
                    body = json.loads(await request.read())
                except ValueError:
                    body = None
            self.requests.append(ReceivedRequest(request.method, request.path, body))
        response: web.StreamResponse = await handler(request)
        return response

    async def _health(self, request: web.Request) -> web.Response:
        if self.healthy:
            return web.Response(status=200)
        return web.json_response({"error": "unhealthy", "error_type": "healthcheck"}, status=503)

    async def _info(self, request: web.Request) -> web.Response:
        return web.json_response(self.info())

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "connections": self.connections,
                "open_connections": self.open_connections,
                "requests": len(self.requests),
            }
        )

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        if not self.tokenizer:
            return web.json_response({"error": "No fast tokenizer available"}, status=404)
        inputs = body.get("inputs")
        if not isinstance(inputs, str):
            return _axum_data_error("inputs", "a string")
        tokens = [{"id": BOS_ID, "text": "", "start": 0, "stop": 0}]
        tokens += [
            {"id": t.id, "text": t.text, "start": t.start, "stop": t.stop}
            for t in tokenize(inputs, self.per_character)
        ]
        return web.json_response(tokens)

    async def _compat_generate(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        if body.get("stream") is True:
            return await self._generation(request, body, stream=True, compat=True)
        return await self._generation(request, body, stream=False, compat=True)

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        return await self._generation(request, body, stream=False, compat=False)

    async def _generate_stream(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        return await self._generation(request, body, stream=True, compat=False)

    # --- generation ------------------------------------------------------------------------

    async def _generation(
        self, request: web.Request, body: dict[str, Any], *, stream: bool, compat: bool
    ) -> web.StreamResponse:
        fault = self._take_fault()
        gateway = _gateway_response(fault, self.model_id)
        if gateway is not None:
            return gateway
        self._in_flight += 1
        try:
            try:
                plan = self._plan(body, stream=stream, compat=compat, fault=fault)
            except _Rejected as rejected:
                if stream:
                    return await self._sse_error_only(request, rejected.payload)
                return web.json_response(rejected.payload, status=rejected.status)
            if stream:
                return await self._stream(request, plan, fault)
            return await self._whole(request, plan, fault)
        finally:
            self._in_flight -= 1

    def _take_fault(self) -> Fault | None:
        fault = self.fault
        if fault is not None and fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                self.fault = None
        return fault

    def _plan(
        self, body: dict[str, Any], *, stream: bool, compat: bool, fault: Fault | None
    ) -> _Plan:
        inputs: str = body["inputs"]
        if "parameters" in body and body["parameters"] is not None:
            params = body["parameters"]
        else:
            params = {"do_sample": True, "details": False}  # TGI's default_parameters()
        if (fault is not None and fault.kind == "overloaded") or (
            self._in_flight > self.max_concurrent_requests
        ):
            raise _Rejected(429, dict(_OVERLOADED))
        if stream and (params.get("best_of") or 1) > 1:
            raise _invalid("`best_of` != 1 is not supported when streaming tokens")
        if stream and params.get("decoder_input_details"):
            raise _invalid("`decoder_input_details` == true is not supported when streaming tokens")
        input_length, max_new_tokens = self._validate(inputs, params)
        reply = self.replies.popleft() if self.replies else None
        if reply is None:
            reply = self.reply if isinstance(self.reply, str) else self.reply(inputs)
        tokens, finish, text = _decode(reply, max_new_tokens, tuple(params.get("stop") or ()))
        full = params.get("return_full_text")
        if full is None and compat:
            full = self.pipeline_tag in (None, "text-generation")
        return _Plan(
            tokens=tokens,
            finish_reason=finish,
            generated_text=(inputs + text) if full else text,
            input_length=input_length,
            seed=_seed(params, inputs),
            details=bool(params.get("details")),
            in_array=compat,
        )

    def _validate(self, inputs: str, params: dict[str, Any]) -> tuple[int, int]:
        """TGI's `validate` and `validate_input` checks, in TGI's order (reference §1.2, §1.6)."""
        best_of = params.get("best_of") or 1
        sampling = bool(params.get("do_sample")) or any(
            params.get(k) is not None for k in ("temperature", "top_k", "top_p", "typical_p")
        )
        if best_of > 1 and not sampling:
            raise _invalid("you must use sampling when `best_of` is > 1")
        checks: list[tuple[str, Callable[[float], bool], str]] = [
            ("temperature", lambda v: v <= 0, "`temperature` must be strictly positive"),
            (
                "repetition_penalty",
                lambda v: v <= 0,
                "`repetition_penalty` must be strictly positive",
            ),
            (
                "frequency_penalty",
                lambda v: not -2.0 <= v <= 2.0,
                "`frequency_penalty` must be >= -2.0 and <= 2.0",
            ),
            ("top_p", lambda v: not 0.0 < v < 1.0, "`top_p` must be > 0.0 and < 1.0"),
            ("typical_p", lambda v: not 0.0 < v < 1.0, "`typical_p` must be > 0.0 and < 1.0"),
            ("top_k", lambda v: v <= 0, "`top_k` must be strictly positive"),
        ]
        for name, bad, message in checks:
            value = params.get(name)
            if value is not None and bad(value):
                raise _invalid(message)
        if params.get("max_new_tokens") == 0:
            raise _invalid("`max_new_tokens` must be strictly positive")
        stop = params.get("stop") or []
        if len(stop) > self.max_stop_sequences:
            raise _invalid(
                f"`stop` supports up to {self.max_stop_sequences} stop sequences. "
                f"Given: {len(stop)}"
            )
        if params.get("seed") is not None and best_of > 1:
            raise _invalid("`seed` must not be set when `best_of` > 1")
        top_n = params.get("top_n_tokens")
        if top_n is not None and top_n > 5:
            raise _invalid(f"`top_n_tokens` must be >= 0 and <= 5. Given: {top_n}")
        if not inputs:
            raise _invalid("`inputs` cannot be empty")
        truncate = params.get("truncate")
        if truncate is not None and (truncate == 0 or truncate > self.max_input_tokens):
            raise _invalid(
                "`truncate` must be strictly positive and less than "
                f"{self.max_input_tokens}. Given: {truncate}"
            )
        return self._validate_input(inputs, truncate, params.get("max_new_tokens"))

    def _validate_input(
        self, inputs: str, truncate: int | None, max_new_tokens: int | None
    ) -> tuple[int, int]:
        length = count_input_tokens(inputs, self.per_character)
        if truncate is not None:
            length = min(length, truncate)
        if max_new_tokens is None:
            max_new_tokens = max(0, self.max_total_tokens - length)
        if length + max_new_tokens > self.max_total_tokens:
            raise _invalid(
                f"`inputs` tokens + `max_new_tokens` must be <= {self.max_total_tokens}. "
                f"Given: {length} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
            )
        if length > self.max_input_tokens:
            raise _invalid(
                f"`inputs` must have less than {self.max_input_tokens} tokens. Given: {length}"
            )
        return length, max_new_tokens

    async def _whole(self, request: web.Request, plan: _Plan, fault: Fault | None) -> web.Response:
        sent = plan.tokens
        if fault is not None and fault.kind in ("stall", "error", "incomplete", "disconnect"):
            sent = plan.tokens[: fault.after_tokens]
        await asyncio.sleep(self.token_delay * len(sent))
        if fault is not None and fault.kind == "stall":
            await asyncio.Event().wait()  # until the client goes away or the fake stops
        if fault is not None and fault.kind == "disconnect":
            _cut(request)
        if fault is not None and fault.kind == "error":
            return web.json_response(_generation_error(), status=424)
        if fault is not None and fault.kind == "incomplete":
            payload = {"error": "Incomplete generation", "error_type": "incomplete_generation"}
            return web.json_response(payload, status=500)
        response: dict[str, Any] = {"generated_text": plan.generated_text}
        if plan.details:
            response["details"] = {
                "finish_reason": plan.finish_reason,
                "generated_tokens": len(plan.tokens),
                "seed": plan.seed,
                "prefill": [],
                "tokens": [_token_json(t) for t in plan.tokens],
            }
        headers = {
            "x-compute-type": "gpu+optimized",
            "x-prompt-tokens": str(plan.input_length),
            "x-generated-tokens": str(len(plan.tokens)),
        }
        document = [response] if plan.in_array else response
        return web.json_response(document, headers=headers, dumps=_compact)

    async def _stream(
        self, request: web.Request, plan: _Plan, fault: Fault | None
    ) -> web.StreamResponse:
        response = await self._start_sse(request)
        if fault is not None and fault.kind == "endless":
            return await self._stream_forever(response, plan)
        # With no delay the first token goes out as soon as it is ready, as TGI sends it, and
        # the others, ready at once, in one write.
        ready: list[bytes] = []
        for index, token in enumerate(plan.tokens):
            if fault is not None and index == fault.after_tokens:
                await _flush(response, ready)
                return await self._break_stream(request, response, fault)
            if self.token_delay:
                await self._pause(response, self.token_delay)
            ready.append(_frame(plan, index, token))
            if self.token_delay or index == 0:
                await _flush(response, ready)
        await _flush(response, ready)
        if fault is not None and fault.after_tokens >= len(plan.tokens):
            return await self._break_stream(request, response, fault)
        await response.write_eof()
        return response

    async def _stream_forever(
        self, response: web.StreamResponse, plan: _Plan
    ) -> web.StreamResponse:
        """Never a last event: the reply's words again and again, as fast as `token_delay` lets
        (batched, yielding to the loop after each write), until the client goes away."""
        words = [t for t in plan.tokens if not t.special] or list(tokenize(" again"))
        ready: list[bytes] = []
        for index, token in enumerate(itertools.cycle(words)):
            if self.token_delay:
                await self._pause(response, self.token_delay)
            ready.append(_token_frame(index, token))
            if self.token_delay or len(ready) >= 64:
                await _flush(response, ready)
                await asyncio.sleep(0)
        return response  # pragma: no cover - the loop above ends only by an exception

    async def _break_stream(
        self, request: web.Request, response: web.StreamResponse, fault: Fault
    ) -> web.StreamResponse:
        if fault.kind == "stall":
            while True:  # until the client goes away or the fake stops
                await self._pause(response, self.keepalive)
        if fault.kind == "disconnect":
            _cut(request)
            return response
        if fault.kind == "error":
            payload = _generation_error()
        else:
            payload = {
                "error": "Incomplete generation stream",
                "error_type": "incomplete_generation_stream",
            }
        await response.write(b"data:" + _compact(payload).encode() + b"\n\n")
        await response.write_eof()
        return response

    async def _sse_error_only(
        self, request: web.Request, payload: dict[str, Any]
    ) -> web.StreamResponse:
        # Streaming routes never change the status: errors are an event on a 200 (§1.4).
        response = await self._start_sse(request)
        await response.write(b"data:" + _compact(payload).encode() + b"\n\n")
        await response.write_eof()
        return response

    async def _start_sse(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "x-compute-type": "gpu+optimized",
                "x-compute-characters": str(len(request.get(_INPUTS, ""))),
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        return response

    async def _pause(self, response: web.StreamResponse, seconds: float) -> None:
        """Wait, sending axum's keep-alive comment after each `keepalive` of silence."""
        while seconds >= self.keepalive:
            await asyncio.sleep(self.keepalive)
            await response.write(b":\n\n")
            seconds -= self.keepalive
        await asyncio.sleep(seconds)

    def info(self) -> dict[str, Any]:
        """The /info document, in TGI ≥ 2.1 shape or in the older one (`max_input_length`)."""
        info: dict[str, Any] = {
            "model_id": self.model_id,
            "model_sha": None,
            "model_pipeline_tag": self.pipeline_tag,
            "max_concurrent_requests": self.max_concurrent_requests,
            "max_best_of": 2,
            "max_stop_sequences": self.max_stop_sequences,
            "max_input_tokens": self.max_input_tokens,
            "max_total_tokens": self.max_total_tokens,
            "validation_workers": 2,
            "max_client_batch_size": 4,
            "router": "text-generation-router",
            "version": "3.3.7",
            "sha": None,
            "docker_label": None,
        }
        if self.info_style == "v1":
            info["max_input_length"] = info.pop("max_input_tokens")
            info.update(
                model_dtype="torch.float16",
                model_device_type="cuda",
                waiting_served_ratio=1.2,
                max_batch_total_tokens=16000,
                max_waiting_tokens=20,
                max_batch_size=None,
                version="2.0.4",
            )
            del info["max_client_batch_size"]
        return info


# --- helpers ---------------------------------------------------------------------------------


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _frame(plan: _Plan, index: int, token: Token) -> bytes:
    """The SSE frame of the token at `index`; the last one carries the text and details."""
    if index < len(plan.tokens) - 1:  # the common case, without building a dict
        return _token_frame(index, token)
    event: dict[str, Any] = {
        "index": index + 1,
        "token": _token_json(token),
        "generated_text": plan.generated_text,
        "details": None,
    }
    if plan.details:
        event["details"] = {
            "finish_reason": plan.finish_reason,
            "generated_tokens": len(plan.tokens),
            "seed": plan.seed,
            "input_length": plan.input_length,
        }
    return b"data:" + _compact(event).encode() + b"\n\n"


def _token_frame(index: int, token: Token) -> bytes:
    """The SSE frame of a token that is not the last one."""
    return b'data:{"index":%d,"token":%s,"generated_text":null,"details":null}\n\n' % (
        index + 1,
        _compact_token(token),
    )


@functools.lru_cache(maxsize=4096)
def _compact_token(token: Token) -> bytes:
    return _compact(_token_json(token)).encode()


def _token_json(token: Token) -> dict[str, Any]:
    logprob = -round((token.id % 997) / 1000 + 0.01, 4)
    return {"id": token.id, "text": token.text, "logprob": logprob, "special": token.special}


@functools.lru_cache(maxsize=256)
def _decode(
    reply: str, max_new_tokens: int, stop: tuple[str, ...]
) -> tuple[tuple[Token, ...], str, str]:
    """The tokens TGI would send for `reply`: cut at `max_new_tokens`, at a stop sequence (kept
    in the text, as TGI does), or ended by EOS."""
    tokens: list[Token] = []
    text = ""
    for token in tokenize(reply):
        if len(tokens) == max_new_tokens:
            return tuple(tokens), "length", text
        tokens.append(token)
        if token.id == EOS_ID:
            return tuple(tokens), "eos_token", text
        if not token.special:
            text += token.text
        if any(s and text.endswith(s) for s in stop):
            return tuple(tokens), "stop_sequence", text
    if len(tokens) == max_new_tokens:
        return tuple(tokens), "length", text
    tokens.append(Token(EOS_ID, EOS, 0, 0))
    return tuple(tokens), "eos_token", text


def _seed(params: dict[str, Any], inputs: str) -> int | None:
    """TGI reports a seed only when it sampled."""
    sampling = bool(params.get("do_sample")) or any(
        params.get(k) not in (None, 1.0) for k in ("temperature", "top_p")
    )
    sampling = sampling or params.get("top_k") is not None or params.get("typical_p") is not None
    if not sampling:
        return None
    seed = params.get("seed")
    return seed if isinstance(seed, int) else zlib.crc32(inputs.encode("utf-8"))


def _generation_error() -> dict[str, Any]:
    return {
        "error": "Request failed during generation: Server error: CUDA out of memory",
        "error_type": "generation",
    }


def _gateway_response(fault: Fault | None, model_id: str) -> web.Response | None:
    """Answers from something in front of TGI, whatever the route."""
    if fault is None:
        return None
    if fault.kind == "html502":
        return web.Response(status=502, text=_HTML_502, content_type="text/html")
    if fault.kind == "rate_limited":
        return web.json_response({"error": "Rate limit reached. Please retry later"}, status=429)
    if fault.kind == "loading":
        payload = {"error": f"Model {model_id} is currently loading", "estimated_time": 20.0}
        return web.json_response(payload, status=503)
    return None


async def _flush(response: web.StreamResponse, frames: list[bytes]) -> None:
    if frames:
        await response.write(b"".join(frames))
        frames.clear()


def _cut(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    """axum's `Json` extractor: 415 without a JSON content type, 400 for bad JSON, 422 for the
    wrong shape, each as plain text, before TGI itself runs (reference §1.5)."""
    if request.content_type != "application/json":
        return _plain(415, "Expected request with `Content-Type: application/json`")
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        return _plain(400, f"Failed to parse the request body as JSON: {exc}")
    if not isinstance(body, dict):
        return _plain(
            422,
            "Failed to deserialize the JSON body into the target type: "
            "invalid type: expected struct GenerateRequest",
        )
    if "inputs" not in body:
        return _plain(
            422,
            "Failed to deserialize the JSON body into the target type: "
            "missing field `inputs` at line 1 column 2",
        )
    problem = _wrong_type(body)
    if problem is not None:
        return problem
    request[_INPUTS] = body["inputs"]
    return body


def _wrong_type(body: dict[str, Any]) -> web.Response | None:
    if not isinstance(body["inputs"], str):
        return _axum_data_error("inputs", "a string")
    params = body.get("parameters")
    if params is None:
        return None
    if not isinstance(params, dict):
        return _axum_data_error("parameters", "struct GenerateParameters")
    for name in _INT_FIELDS:
        value = params.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return _axum_data_error(f"parameters.{name}", "an integer")
        if isinstance(value, int) and value < 0:
            return _axum_data_error(f"parameters.{name}", "an unsigned integer")
    for name in _FLOAT_FIELDS:
        value = params.get(name)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            return _axum_data_error(f"parameters.{name}", "f32")
    for name in _BOOL_FIELDS:
        value = params.get(name)
        if value is not None and not isinstance(value, bool):
            return _axum_data_error(f"parameters.{name}", "a boolean")
    stop = params.get("stop")
    if stop is not None and (
        not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)
    ):
        return _axum_data_error("parameters.stop", "a sequence of strings")
    return None


def _axum_data_error(field: str, expected: str) -> web.Response:
    return _plain(
        422,
        "Failed to deserialize the JSON body into the target type: "
        f"{field}: invalid type, expected {expected}",
    )


def _plain(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain")


# --- as a program ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.tgi",
        description="A fake TGI server: try koalabot without a GPU.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--token-delay", type=float, default=0.02, help="seconds per token")
    parser.add_argument("--reply", help="always answer this (default: quote the user)")
    parser.add_argument("--keepalive", type=float, default=15.0, help="seconds (TGI: 15)")
    parser.add_argument("--model-id", default="koala-13b-fake")
    parser.add_argument("--max-input-tokens", type=int, default=2047)
    parser.add_argument("--max-total-tokens", type=int, default=2048)
    parser.add_argument("--no-tokenizer", action="store_true", help="/tokenize answers 404")
    parser.add_argument("--tls-cert", help="PEM certificate chain: serve HTTPS")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    fake = FakeTGI(
        reply=args.reply,
        token_delay=args.token_delay,
        keepalive=args.keepalive,
        model_id=args.model_id,
        max_input_tokens=args.max_input_tokens,
        max_total_tokens=args.max_total_tokens,
        tokenizer=not args.no_tokenizer,
        host=args.host,
        port=args.port,
        ssl_context=context,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with fake:
        print(f"fake TGI serving {fake.url} (Ctrl-C to stop)", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Serve until Ctrl-C."""
    asyncio.run(_serve(_parser().parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
