"""`koalabot prompt FILE`: print exactly the prompt the bot would send for the next answer."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from koalabot.cli.options import add_backend, settings_from
from koalabot.config import Settings
from koalabot.errors import BackendError, InvalidConversationError
from koalabot.prompt.budget import CachedCounter, Fitted, Limits, fit
from koalabot.prompt.templates import TEMPLATES, Turn, render, turns_from_data


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `prompt` subcommand."""
    parser = subparsers.add_parser(
        "prompt",
        help="print the prompt for the next answer to a conversation in a JSON file",
        description=(
            'FILE holds a JSON list of {"role": "user"|"assistant", "content": "..."} ending '
            "with a user turn. The prompt is written to stdout as is, without a trailing "
            "newline. Every turn is rendered unless --fit is given."
        ),
    )
    parser.add_argument("file", metavar="FILE", help="the conversation as JSON, or - for stdin")
    parser.add_argument("--config", metavar="FILE.toml", help="read settings from a TOML file")
    add_backend(parser)
    parser.add_argument(
        "--fit",
        action="store_true",
        help="drop the oldest turns to fit the TGI server's budget (asks its /info, /tokenize)",
    )
    parser.add_argument(
        "--model",
        metavar="NAME",
        help="with --fit: fit for this KOALABOT_MODELS model (its server's window and tokenizer)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Render (or fit) the conversation and write the prompt bytes to stdout."""
    settings = settings_from(args)
    turns = read_turns(args.file)
    if args.fit:
        # The backend's warnings would bury the one-line error (Python prints them to stderr
        # when logging is not set up); the error names the server instead.
        quiet = logging.NullHandler()
        logging.getLogger("koalabot").addHandler(quiet)
        try:
            fitted = asyncio.run(_fit(turns, settings, args.model))
        finally:
            logging.getLogger("koalabot").removeHandler(quiet)
        prompt = fitted.prompt
        print(
            f"koalabot: {fitted.prompt_tokens} prompt tokens; "
            f"left out the {fitted.dropped_turns} oldest of {len(turns)} messages",
            file=sys.stderr,
        )
    else:
        prompt = render(turns, TEMPLATES[settings.template])
    sys.stdout.buffer.write(prompt.encode("utf-8"))
    sys.stdout.buffer.flush()
    return 0


def read_turns(file: str) -> list[Turn]:
    """Turns from a JSON file (``-`` for stdin); InvalidConversationError names any problem."""
    name = "stdin" if file == "-" else file
    try:
        raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        raise InvalidConversationError(f"cannot read {name}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidConversationError(f"{name} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InvalidConversationError(
            f"{name} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    try:
        return turns_from_data(data)
    except InvalidConversationError as exc:
        raise InvalidConversationError(f"{name}: {exc}") from None


async def _fit(turns: list[Turn], settings: Settings, model: str | None) -> Fitted:
    # Imported here: rendering alone needs no HTTP stack and works without a server.
    from koalabot.backend import Backend
    from koalabot.backend.models import model_settings

    if model is not None:
        settings = model_settings(settings, model)
    template = TEMPLATES[settings.template]
    async with Backend.from_settings(settings) as backend:
        try:
            limits = Limits.from_info(await backend.info())
            return await fit(
                turns, template, limits, settings.max_new_tokens, CachedCounter(backend)
            )
        except BackendError as exc:
            raise type(exc)(f"{', '.join(settings.endpoints)}: {exc}") from None
