"""`koalabot review`: serve the review page on this machine until stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import signal
import sys
from typing import Any

from aiohttp import web

from koalabot.cli.options import add_common, existing_store_settings
from koalabot.errors import ConfigError
from koalabot.review.access import own_loopback, review_token
from koalabot.store.database import open_database

DEFAULT_PORT = 8765

DESCRIPTION = """\
Open a local web page listing rated answers, newest first, with their threads, votes and how
they were generated. Include an answer, exclude it with a reason, or correct it (write the
answer it should have given: it is exported as a liked answer). `koalabot export` leaves
excluded answers out, and with --reviewed-only exports only included and corrected ones.
The page is bound to a loopback address of its own (127.x.y.z) and needs the token printed at
start, or KOALABOT_REVIEW_TOKEN (at least 128 bits: 22 random characters)."""


def port_number(text: str) -> int:
    """A TCP port, 0 for any free one."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return int(text)


def register(subparsers: Any) -> None:
    """Add `review` to the command tree."""
    parser = subparsers.add_parser(
        "review", help="curate rated answers in a local web page", description=DESCRIPTION
    )
    parser.add_argument(
        "--port",
        dest="review_port",
        type=port_number,
        default=DEFAULT_PORT,
        help=f"port to serve on (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--host",
        dest="review_host",
        default=None,
        help="address to bind (default: a random 127.x.y.z, so only this machine can open the "
        "page and no other local server shares its cookies)",
    )
    parser.add_argument(
        "--reviewer", help="name stored with each decision (default: your login name)"
    )
    add_common(parser)
    parser.set_defaults(handler=run)


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "reviewer"


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM."""
    settings = existing_store_settings(args)
    token, made_here = review_token(settings.review_token)
    reviewer = (args.reviewer or _login_name()).strip()
    if not reviewer:
        raise ConfigError("--reviewer must not be empty")
    asyncio.run(
        serve(
            settings.database_url,
            args.review_host or own_loopback(),
            args.review_port,
            token=token,
            reviewer=reviewer,
            show_token=made_here,
        )
    )
    return 0


def _address(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


async def serve(
    database_url: str, host: str, port: int, *, token: str, reviewer: str, show_token: bool
) -> None:
    """Serve the review page on ``host:port``; print where to open it."""
    from koalabot.review.app import review_app  # Jinja2 and the page: only when reviewing

    db = await open_database(database_url)
    runner = web.AppRunner(review_app(db, token, reviewer), access_log=None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"cannot serve the review page on {host}:{port}: {exc}") from None
        bound = runner.addresses[0][1]
        address = _address(host, bound)
        if show_token:
            print(f"koalabot review: open {address}?token={token}", flush=True)
        else:
            print(f"koalabot review: open {address} (token: KOALABOT_REVIEW_TOKEN)", flush=True)
        print(f"reviewing as {reviewer}; press Ctrl-C to stop", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        await db.close()
