"""A fake OpenAI-compatible completions server (vLLM's shapes) on a real socket, with faults.

Speaks ``GET /v1/models`` (with ``max_model_len`` when ``state_context``), ``GET /health``,
``POST /v1/completions`` (SSE ``data: {json}`` chunks, a finish_reason chunk, a usage chunk when
asked, ``data: [DONE]``; stop strings cut as vLLM does) and vLLM's ``POST /tokenize``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import ssl
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

FaultKind = Literal["429", "stall", "stall_mid", "error_mid_stream", "html_502", "too_long"]


@dataclass
class Fault:
    """What goes wrong with the next ``times`` completion requests."""

    kind: FaultKind
    times: int = 1
    retry_after: float = 0.2
    seconds: float = 5.0
    #: The JSON body of a "too_long" answer (default: vLLM's).
    payload: dict[str, Any] | None = None


@dataclass
class Received:
    method: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def pieces(text: str) -> list[str]:
    """The fake's tokens: each word with the spaces before it."""
    return re.findall(r"\s*\S+|\s+$", text)


def count_tokens(text: str) -> int:
    """What the fake's /tokenize says for ``text`` (its BOS included)."""
    return 1 + len(pieces(text))


class FakeOpenAI:
    """An OpenAI-compatible completions server on 127.0.0.1 (port 0: any free port)."""

    def __init__(
        self,
        *,
        model_id: str = "koala-13b",
        context: int = 2048,
        state_context: bool = True,
        tokenizer: bool = True,
        api_key: str | None = None,
        token_delay: float = 0.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.replies: deque[str] = deque()
        self.reply = " Koalas eat eucalyptus leaves."
        self.model_id = model_id
        self.context = context
        self.state_context = state_context
        self.tokenizer = tokenizer
        self.api_key = api_key
        self.token_delay = token_delay
        self.fault: Fault | None = None
        self.requests: list[Received] = []
        #: Client connections that sent a request (distinct sockets), since creation.
        self.connections = 0
        self._transports: set[asyncio.BaseTransport] = set()
        self.port = 0
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def prompts(self) -> list[str]:
        return [r.body["prompt"] for r in self.requests if r.path == "/v1/completions"]

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record])
        app.router.add_routes(
            [
                web.get("/health", self._health),
                web.get("/v1/models", self._models),
                web.post("/v1/completions", self._completions),
                web.post("/tokenize", self._tokenize),
                web.get("/_fake/stats", self._stats),
            ]
        )
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self._ssl)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        transport = request.transport
        if transport is not None and transport not in self._transports:
            self._transports = {t for t in self._transports if not t.is_closing()}
            self._transports.add(transport)
            self.connections += 1
        body = await request.json() if request.can_read_body else {}
        self.requests.append(Received(request.method, request.path, body, dict(request.headers)))
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            error = {"message": "Unauthorized", "type": "authentication_error", "code": 401}
            return web.json_response({"error": error}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response()

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"connections": self.connections})

    async def _models(self, request: web.Request) -> web.Response:
        entry: dict[str, Any] = {"id": self.model_id, "object": "model", "owned_by": "vllm"}
        if self.state_context:
            entry["max_model_len"] = self.context
        return web.json_response({"object": "list", "data": [entry]})

    async def _tokenize(self, request: web.Request) -> web.Response:
        if not self.tokenizer:
            return web.json_response({"detail": "Not Found"}, status=404)
        body = await request.json()
        n = count_tokens(body["prompt"])
        return web.json_response(
            {"count": n, "max_model_len": self.context, "tokens": list(range(n))}
        )

    def _take_fault(self) -> Fault | None:
        fault = self.fault
        if fault is None:
            return None
        fault.times -= 1
        if fault.times <= 0:
            self.fault = None
        return fault

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        fault = self._take_fault()
        if fault is not None and fault.kind == "429":
            error = {"message": "Too many requests", "type": "RateLimitError", "code": 429}
            headers = {"Retry-After": str(fault.retry_after)}
            return web.json_response({"error": error}, status=429, headers=headers)
        if fault is not None and fault.kind == "html_502":
            html = "<html><body><h1>502 Bad Gateway</h1></body></html>"
            return web.Response(status=502, text=html, content_type="text/html")
        prompt_tokens = count_tokens(body["prompt"])
        if (fault is not None and fault.kind == "too_long") or (
            prompt_tokens + int(body.get("max_tokens", 16)) > self.context
        ):
            return web.json_response(self._too_long(fault, prompt_tokens, body), status=400)
        if body.get("model") != self.model_id:
            error = {"message": f"The model `{body.get('model')}` does not exist."}
            return web.json_response({"error": {**error, "type": "NotFoundError"}}, status=404)
        return await self._stream(request, body, prompt_tokens, fault)

    def _too_long(self, fault: Fault | None, n: int, body: dict[str, Any]) -> dict[str, Any]:
        if fault is not None and fault.payload is not None:
            return fault.payload
        message = (
            f"This model's maximum context length is {self.context} tokens. However, you "
            f"requested {n + int(body.get('max_tokens', 16))} tokens ({n} in the messages, "
            f"{body.get('max_tokens')} in the completion). Please reduce the length of the "
            "messages or completion."
        )
        return {
            "error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}
        }

    async def _stream(
        self, request: web.Request, body: dict[str, Any], n_prompt: int, fault: Fault | None
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if fault is not None and fault.kind == "stall":
            await asyncio.sleep(fault.seconds)
        text, reason = self._answer(body)
        out = pieces(text)[: int(body.get("max_tokens", 16))]
        if fault is None and not self.token_delay:  # as fast as can be: the rest in one write
            await response.write(b"".join(_event(self._chunk(p, None)) for p in out[:1]))
            out_rest = [_event(self._chunk(p, None)) for p in out[1:]]
            await response.write(b"".join(out_rest) + self._tail(body, reason, n_prompt, out))
            return response
        for i, piece in enumerate(out):
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            if fault is not None and i == 1 and fault.kind in ("error_mid_stream", "stall_mid"):
                if fault.kind == "stall_mid":
                    await asyncio.sleep(fault.seconds)
                error = {"message": "CUDA out of memory", "type": "InternalServerError"}
                await response.write(_event({"error": {**error, "code": 500}}))
                await response.write(b"data: [DONE]\n\n")
                return response
            await response.write(_event(self._chunk(piece, None)))
        await response.write(self._tail(body, reason, n_prompt, out))
        return response

    def _tail(self, body: dict[str, Any], reason: str, n_prompt: int, out: list[str]) -> bytes:
        """The finish_reason chunk, a usage chunk when asked, and [DONE]."""
        tail = _event(self._chunk("", reason))
        if body.get("stream_options", {}).get("include_usage"):
            usage = {"prompt_tokens": n_prompt, "completion_tokens": len(out)}
            usage["total_tokens"] = n_prompt + len(out)
            tail += _event({**self._chunk("", None), "choices": [], "usage": usage})
        return tail + b"data: [DONE]\n\n"

    def _answer(self, body: dict[str, Any]) -> tuple[str, str]:
        text = self.replies.popleft() if self.replies else self.reply
        for stop in [*body.get("stop", []), "</s>"]:
            if stop in text:
                return text[: text.index(stop)], "stop"  # vLLM cuts the stop string
        return text, "length"

    def _chunk(self, text: str, reason: str | None) -> dict[str, Any]:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        return {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": 0,
            "model": self.model_id,
            "choices": [choice],
            "usage": None,
        }


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


async def _serve(args: argparse.Namespace) -> None:
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    fake = FakeOpenAI(context=args.context, token_delay=args.token_delay, ssl_context=context)
    fake.port = args.port
    if args.reply is not None:
        fake.reply = args.reply
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with fake:
        print(f"fake OpenAI-compatible server at {fake.url} (Ctrl-C to stop)", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Serve until Ctrl-C (the bench runs it in its own process)."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.openai")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--token-delay", type=float, default=0.0)
    parser.add_argument("--reply")
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
