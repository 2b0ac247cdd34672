"""`koalabot forget`: erase one user's data, or purge conversations idle for too long."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from koalabot.cli.options import add_common, existing_store_settings
from koalabot.store.database import open_database
from koalabot.store.forget import ForgetCounts, forget_user, purge_idle
from koalabot.store.spool import Spool

DESCRIPTION = """\
--user PLATFORM:ID deletes that user's messages, every answer to them (with their generation
records and the votes on them) and every vote the user cast; later answers in the same threads
stay, but their stored prompt strings, which quote the user, are emptied. Their messages and
votes kept in the spool file (while the database was away) are deleted too. An opt-out record is
kept, so the user's future messages stay out of training data.
--older-than DAYS deletes whole conversations with no message in the last DAYS days, with
everything in them; a conversation still in use is kept whole.
Each runs in one transaction: all of it happens, or nothing."""


def _user_key(text: str) -> tuple[str, str]:
    platform, sep, user = text.partition(":")
    if not sep or not platform or not user:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not PLATFORM:ID (for example slack:U012AB3CD or discord:8035111022467)"
        )
    return platform, user


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not days > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of days, got {text!r}")
    return days


def register(subparsers: Any) -> None:
    """Add `forget` to the command tree."""
    parser = subparsers.add_parser(
        "forget", help="delete a user's data, or purge old conversations", description=DESCRIPTION
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--user", type=_user_key, metavar="PLATFORM:ID", help="the user to forget")
    what.add_argument(
        "--older-than", type=_days, metavar="DAYS", help="purge conversations idle this long"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would go, delete nothing"
    )
    add_common(parser)
    parser.set_defaults(handler=run)


def describe(counts: ForgetCounts) -> str:
    """The counts in words."""
    parts = [
        (counts.user_messages, "user message", "user messages"),
        (counts.answers, "answer", "answers"),
        (counts.votes, "vote", "votes"),
        (counts.generations, "generation record", "generation records"),
        (counts.prompts_redacted, "stored prompt emptied", "stored prompts emptied"),
        (counts.conversations, "conversation", "conversations"),
        (counts.message_refs, "platform message link", "platform message links"),
        (counts.processed_events, "delivery id", "delivery ids"),
        (counts.spooled, "kept message or vote", "kept messages and votes"),
    ]
    words = [f"{n:,} {one if n == 1 else many}" for n, one, many in parts]
    return ", ".join(words)


def run(args: argparse.Namespace) -> int:
    """Delete (or count, with --dry-run) and print what went."""
    settings = existing_store_settings(args)
    spool = Spool(Path(settings.spool_path), settings.spool_limit) if settings.spool_path else None
    try:
        counts, what = asyncio.run(_forget(settings.database_url, args, spool))
    finally:
        if spool is not None:
            spool.close()
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{what}: {verb} {describe(counts)}")
    if args.dry_run:
        print("(dry run: nothing was changed)", file=sys.stderr)
    return 0


async def _forget(
    url: str, args: argparse.Namespace, spool: Spool | None
) -> tuple[ForgetCounts, str]:
    db = await open_database(url)
    try:
        if args.user is not None:
            platform, user = args.user
            counts = await forget_user(db, platform, user, dry_run=args.dry_run, spool=spool)
            return counts, f"forget {platform}:{user}"
        cutoff = datetime.now(UTC) - timedelta(days=args.older_than)
        counts = await purge_idle(db, cutoff, dry_run=args.dry_run)
        return counts, f"conversations idle since {cutoff:%Y-%m-%d %H:%M} UTC"
    finally:
        await db.close()
