"""`koalabot chat`: talk to the model in the terminal (or pipe lines in from a script).

`--demo` answers with an echoing stand-in (koalabot/backend/echo.py) started inside this process,
so the quick start needs no model server and leaves nothing running after the chat.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

from koalabot.adapter import load_module
from koalabot.cli.logs import setup_logging
from koalabot.cli.options import add_backend, add_common, settings_from
from koalabot.config import Settings

DEMO_BANNER = (
    "[demo: the answers come from a stand-in that echoes your message back, not from a model; "
    "for real answers run koalabot chat with KOALABOT_MODEL_URL set to your model server]"
)


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "chat", help="chat in the terminal; /good /bad /retry /new /history /optout /optin"
    )
    add_common(parser)
    add_backend(parser)
    parser.add_argument("--user", help="your user id in the store (default: your login name)")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="answer with a stand-in that echoes your message (no model needed), for the length "
        "of this chat",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    # The chat's own lines say what went wrong; logs would only repeat it between the answers.
    setup_logging("ERROR" if settings.log_level == "INFO" else settings.log_level, "text")
    terminal = load_module("terminal")
    session = _session(settings, args.user, args.demo)
    if sys.stdin.isatty():
        status: int = terminal.run_at_tty(session)
        return status
    return asyncio.run(_piped(session))


async def _piped(session: contextlib.AbstractAsyncContextManager[Any]) -> int:
    async with session as chat:
        status: int = await chat.run()
        return status


@contextlib.asynccontextmanager
async def _session(settings: Settings, user: str | None, demo: bool) -> AsyncIterator[Any]:
    """A TerminalChat on an open engine (and the stand-in with --demo), all closed after."""
    from koalabot.engine.engine import Engine  # heavy (SQLAlchemy, aiohttp); only when chatting

    terminal = load_module("terminal")
    async with contextlib.AsyncExitStack() as stack:
        if demo:
            from koalabot.backend.echo import EchoServer

            echo = await stack.enter_async_context(EchoServer())
            settings = settings.model_copy(
                update={
                    "model_url": [echo.url],
                    "tgi_url": None,
                    "tgi_urls": [],
                    "model_api": "tgi",
                }
            )
            print(DEMO_BANNER, flush=True)
        # No spool: the person at the terminal is told to send again, rather than get an answer
        # later printed over what they are typing.
        engine = await Engine.open(settings.model_copy(update={"spool_path": ""}))
        stack.push_async_callback(engine.close)
        yield terminal.TerminalChat(engine, user=user)
