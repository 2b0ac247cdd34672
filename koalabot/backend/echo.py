"""A stand-in model for `koalabot chat --demo`: an in-process server speaking TGI's wire protocol
that echoes the person's last message back, word by word.

It runs inside the chat's own event loop on a free port of 127.0.0.1, so it lives exactly as long
as the chat: nothing keeps a port after the chat ends, and a second demo never talks to a first.
It goes through the real backend client (HTTP, SSE framing, /info), so the demo exercises the same
path a TGI server does. Trade-off: it has no tokenizer (the engine then estimates token counts)
and ignores sampling settings. Every answer says it comes from an echo, so nobody mistakes it for
a model.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MODEL_ID = "echo-stand-in"
#: The start of every answer: the chat shows at a glance that no model wrote it.
PREFIX = "(echo stand-in, not a model) You said: "
#: The last user turn of a Koala prompt: `USER: <text> GPT:` (both templates).
_LAST_USER = re.compile(r"USER: (.*?) ?GPT:\s*$", re.DOTALL)
_WORDS = re.compile(r"\s*\S+")


def echo_answer(prompt: str) -> str:
    """What the stand-in answers to a rendered prompt."""
    turns = prompt.rsplit("USER: ", 1)
    found = _LAST_USER.search("USER: " + turns[-1]) if len(turns) == 2 else None
    return PREFIX + (found.group(1).strip() if found else prompt.strip()[-200:])


@dataclass
class EchoServer:
    """The stand-in; ``url`` once started. Use ``async with``."""

    token_delay: float = 0.02
    host: str = "127.0.0.1"
    url: str = ""
    _runner: web.AppRunner | None = field(default=None, repr=False)

    async def __aenter__(self) -> EchoServer:
        app = web.Application()
        app.router.add_routes(
            [
                web.get("/health", self._health),
                web.get("/info", self._info),
                web.post("/generate_stream", self._stream),
                web.post("/tokenize", self._no_tokenizer),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        self.url = f"http://{self.host}:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "model_id": MODEL_ID,
                "max_input_tokens": 4096,
                "max_total_tokens": 8192,
                "max_stop_sequences": 8,
                "router": "koalabot-echo",
                "version": "echo",
            }
        )

    async def _no_tokenizer(self, request: web.Request) -> web.Response:
        return web.json_response({"error": "No fast tokenizer available"}, status=404)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        params: dict[str, Any] = body.get("parameters") or {}
        words = _WORDS.findall(echo_answer(str(body.get("inputs", ""))))
        words = words[: int(params.get("max_new_tokens") or len(words))]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index, word in enumerate(words, start=1):
            await asyncio.sleep(self.token_delay)
            last = index == len(words)
            event = {
                "index": index,
                "token": {"id": index, "text": word, "logprob": 0.0, "special": False},
                "generated_text": "".join(words) if last else None,
                "details": _details(len(words)) if last and params.get("details") else None,
            }
            await response.write(b"data:" + json.dumps(event).encode() + b"\n\n")
        await response.write_eof()
        return response


def _details(tokens: int) -> dict[str, Any]:
    return {"finish_reason": "eos_token", "generated_tokens": tokens, "seed": None}
