"""`koalabot chat`: talk to the model in the terminal (or pipe lines in from a script)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from koalabot.adapter import load_module
from koalabot.cli.logs import setup_logging
from koalabot.cli.options import add_backend, add_common, settings_from


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "chat", help="chat in the terminal; /good /bad /retry /new /history /optout /optin"
    )
    add_common(parser)
    add_backend(parser)
    parser.add_argument("--user", help="your user id in the store (default: your login name)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    # The chat's own lines say what went wrong; logs would only repeat it between the answers.
    setup_logging("ERROR" if settings.log_level == "INFO" else settings.log_level, "text")
    return asyncio.run(_chat(settings, args.user))


async def _chat(settings: Any, user: str | None) -> int:
    from koalabot.engine.engine import Engine  # heavy (SQLAlchemy, aiohttp); only when chatting

    terminal = load_module("terminal")
    # No spool: the person at the terminal is told to send again, rather than get an answer
    # later printed over what they are typing.
    engine = await Engine.open(settings.model_copy(update={"spool_path": ""}))
    try:
        chat = terminal.TerminalChat(engine, user=user)
        status: int = await chat.run()
        return status
    finally:
        await engine.close()
