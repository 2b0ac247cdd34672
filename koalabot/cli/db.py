"""`koalabot db upgrade|downgrade|current`: move the schema by hand (PostgreSQL needs it)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from koalabot.cli.options import add_common, existing_store_settings, settings_from
from koalabot.errors import NotConfirmedError
from koalabot.store.database import (
    current_revision,
    downgrade,
    head_revision,
    known_revisions,
    safe_url,
    upgrade,
)


def register(subparsers: Any) -> None:
    """Add `db` and its three actions to the command tree."""
    parser = subparsers.add_parser(
        "db",
        help="create, upgrade or inspect the database schema",
        description="Move the database schema. SQLite is upgraded on start; PostgreSQL only here.",
    )
    actions = parser.add_subparsers(dest="db_action", required=True, metavar="ACTION")

    up = actions.add_parser("upgrade", help="upgrade the schema (default: to the newest)")
    up.add_argument("revision", nargs="?", default="head", help="target revision (default head)")
    up.set_defaults(handler=_upgrade)

    down = actions.add_parser(
        "downgrade", help="downgrade the schema; 'base' drops every koalabot table and its data"
    )
    down.add_argument("revision", help="target revision, or 'base'")
    down.add_argument(
        "--yes",
        action="store_true",
        help="do not ask for confirmation (a downgrade deletes data; without a terminal to ask "
        "on, it runs only with --yes)",
    )
    down.set_defaults(handler=_downgrade)

    current = actions.add_parser("current", help="show the schema revision of the database")
    current.set_defaults(handler=_current)

    for action in (up, down, current):
        add_common(action)


def _revision(rev: str | None) -> str:
    head = head_revision()
    if rev is None:
        return "(none)"
    return f"{rev} (head)" if rev == head else rev


@contextmanager
def _progress() -> Iterator[None]:
    """Show the migrations' INFO lines (one per revision) on stdout while a command runs."""
    logger = logging.getLogger("koalabot.migrations")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _move(args: argparse.Namespace, verb: str, step: Callable[[str], Awaitable[None]]) -> int:
    url = settings_from(args).database_url

    async def run() -> tuple[str | None, str | None]:
        before = await current_revision(url)
        with _progress():
            await step(url)
        return before, await current_revision(url)

    before, after = asyncio.run(run())
    where = safe_url(url)
    if before == after:
        print(f"{where} is already at {_revision(after)}; nothing to do.")
    else:
        print(f"{where} {verb} from {_revision(before)} to {_revision(after)}.")
    return 0


def _upgrade(args: argparse.Namespace) -> int:
    return _move(args, "upgraded", lambda url: upgrade(url, args.revision))


def _downgrade(args: argparse.Namespace) -> int:
    if not args.yes:
        url = settings_from(args).database_url
        before = asyncio.run(current_revision(url))
        if before is not None and before != args.revision:
            _confirm(_downgrade_warning(safe_url(url), before, args.revision))
    return _move(args, "downgraded", lambda url: downgrade(url, args.revision))


def _downgrade_warning(where: str, before: str, target: str) -> str:
    if target == "base":
        loss = "drops every koalabot table: all conversations, answers, votes and reviews"
    else:
        loss = f"reverts the migrations after {target}, and any data they hold is lost"
    return f"downgrading {where} from {_revision(before)} to {target} {loss}"


def _confirm(warning: str) -> None:
    """Go on only if the person at the terminal types "yes" (no terminal: only with --yes)."""
    if not sys.stdin.isatty():
        raise NotConfirmedError(f"{warning}; pass --yes to go on (nothing was changed)")
    print(f"Warning: {warning}.")
    try:
        answer = input('Type "yes" to go on: ')
    except EOFError:
        answer = ""
    if answer.strip().lower() != "yes":
        raise NotConfirmedError("not confirmed; nothing was changed")


def _current(args: argparse.Namespace) -> int:
    url = existing_store_settings(args).database_url
    rev = asyncio.run(current_revision(url))
    head = head_revision()
    if rev == head:
        print(_revision(rev))
    elif rev is None or rev in known_revisions():
        print(f"{_revision(rev)} (head is {head}: run `koalabot db upgrade`)")
    else:
        print(f"{rev} (unknown to this koalabot, whose newest is {head}: upgrade koalabot)")
    return 0
