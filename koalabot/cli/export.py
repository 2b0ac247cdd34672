"""`koalabot export`: voted answers → a JSONL training file (koala, kto, dpo, sft, openai,
sharegpt)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from koalabot.cli.options import add_common, require_existing_store, settings_from
from koalabot.config import Settings
from koalabot.export.options import ExportError, ExportOptions, Format
from koalabot.export.run import export
from koalabot.export.summary import Summary, print_summary
from koalabot.store.database import Database, open_database, safe_url
from koalabot.store.settings import pseudonym_secret

DESCRIPTION = """\
Write every voted answer as training data, one JSON object per line. koala: EasyLM rows
(liked under "GPT:", disliked under "An Unhelpful Answer:"); kto: prompt/completion/label;
dpo: prompt/chosen/rejected from regenerated answers with opposite votes; sft (prompt and
completion), openai and sharegpt: liked answers with their thread. Each row's context is the
thread up to the rated answer; roles alternate (consecutive messages of one role are joined) and
role markers and <s>, </s> in text are neutralised (--raw-text keeps them).
Votes of opted-out users do not count, and threads with their messages are left out.
Answers excluded on the review page (`koalabot review`) never appear (with --reviewed-only in
kto and dpo, those excluded as wrong or low quality are negatives); corrected ones are
exported as liked answers. E-mail addresses, phone numbers, secret URLs and API keys are
replaced with placeholders (--no-redact keeps them).
A summary of rows written and skipped (by reason) goes to stderr."""


def _when(text: str) -> tuple[datetime, bool]:
    """A UTC time from YYYY-MM-DD or an ISO 8601 time; True when only a day was given."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC), True
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (YYYY-MM-DD) or an ISO time (YYYY-MM-DDTHH:MM[:SS][+HH:MM])"
        ) from None
    return (when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)), False


def day_start(text: str) -> datetime:
    """--since: from the start of that day (or that exact time), UTC."""
    return _when(text)[0]


def day_end(text: str) -> datetime:
    """--until: an exclusive bound just after that day (or that exact time), UTC."""
    when, whole_day = _when(text)
    return when + (timedelta(days=1) if whole_day else timedelta(microseconds=1))


def at_least_one(text: str) -> int:
    """A whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


#: Where conversations come from (the `platform` of the stored conversations).
PLATFORMS = ("slack", "discord", "terminal")


def register(subparsers: Any) -> None:
    """Add `export` to the command tree."""
    parser = subparsers.add_parser(
        "export", help="write voted answers as training data (JSONL)", description=DESCRIPTION
    )
    parser.add_argument("--format", required=True, choices=[f.value for f in Format])
    parser.add_argument("--out", required=True, metavar="FILE", help="output file; - for stdout")
    parser.add_argument(
        "--since", type=day_start, metavar="DATE", help="answers written on or after (UTC)"
    )
    parser.add_argument(
        "--until", type=day_end, metavar="DATE", help="answers written up to this day (inclusive)"
    )
    parser.add_argument(
        "--platform", choices=PLATFORMS, help="only this platform (slack, discord, terminal)"
    )
    parser.add_argument(
        "--channel", help="only this channel id (and the Discord threads opened from it)"
    )
    parser.add_argument(
        "--model",
        help="only answers of this model (its KOALABOT_MODELS name, else the server's model id)",
    )
    parser.add_argument(
        "--min-votes",
        type=at_least_one,
        default=1,
        metavar="N",
        help="only answers with at least N counted votes (default 1)",
    )
    parser.add_argument(
        "--include-failed",
        action="store_true",
        help="also rated answers that failed or were interrupted (default: only complete ones)",
    )
    parser.add_argument(
        "--pseudonymize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="replace user ids with keyed hashes (default), keyed by KOALABOT_PSEUDONYM_SECRET or "
        "else by a random secret made once and kept in the database",
    )
    parser.add_argument(
        "--string-prompt",
        action="store_true",
        help="kto/dpo: the exact prompt string the answer came from, and string completions",
    )
    parser.add_argument(
        "--meta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add a meta object (ids, pseudonyms, votes, model) to each row "
        "(default: on, except for openai)",
    )
    parser.add_argument(
        "--reviewed-only",
        action="store_true",
        help="only answers included or corrected on the review page (koalabot review)",
    )
    parser.add_argument(
        "--dedupe",
        action="store_true",
        help="one answer per question: drop answers whose user message repeats an earlier one "
        "(case, spacing and punctuation aside)",
    )
    parser.add_argument(
        "--redact",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="replace e-mail addresses, phone numbers, URLs with secrets and API keys with "
        "placeholders (default; --no-redact keeps them)",
    )
    parser.add_argument(
        "--raw-text",
        action="store_true",
        help="keep role markers (USER:, GPT:) and <s>, </s> in message text as written "
        "(default: neutralised as the prompt neutralises them)",
    )
    parser.add_argument(
        "--sft-messages",
        action="store_true",
        help='sft: {"messages": [...]} rows, disliked answers left out of the thread (default: '
        "prompt-completion rows, where only the liked answer is trained)",
    )
    parser.add_argument(
        "--workers",
        type=at_least_one,
        default=default_workers(),
        metavar="N",
        help="processes exporting a SQLite store at once (default: %(default)s, the CPUs up to "
        f"{MAX_DEFAULT_WORKERS}); the file is the same for any number. PostgreSQL, an in-memory "
        "store and --dedupe use one",
    )
    add_common(parser)
    parser.set_defaults(handler=run)


#: Workers by default at most: each holds a few ranges of rows, and more rarely pay off.
MAX_DEFAULT_WORKERS = 2


def default_workers() -> int:
    """The CPUs this process may use, up to `MAX_DEFAULT_WORKERS`."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, MAX_DEFAULT_WORKERS))


def options_from(args: argparse.Namespace, settings: Settings) -> ExportOptions:
    """The export's options from the command line and the settings."""
    # Without KOALABOT_PSEUDONYM_SECRET the database's own secret is filled in once it is open.
    secret = (settings.pseudonym_secret or None) if args.pseudonymize else None
    if args.since and args.until and args.since >= args.until:
        raise ExportError("--since must be before --until")
    return ExportOptions(
        format=Format(args.format),
        since=args.since,
        until=args.until,
        platform=args.platform,
        channel=args.channel,
        model=args.model,
        min_votes=args.min_votes,
        include_failed=args.include_failed,
        pseudonym_secret=secret,
        string_prompt=args.string_prompt,
        meta=args.meta,
        reviewed_only=args.reviewed_only,
        dedupe=args.dedupe,
        redact=args.redact,
        raw_text=args.raw_text,
        sft_messages=args.sft_messages,
    )


def run(args: argparse.Namespace) -> int:
    """Export, then print the summary on stderr."""
    settings = settings_from(args)
    options = options_from(args, settings)
    require_existing_store(settings.database_url)
    target = "stdout" if args.out == "-" else args.out
    try:
        with _output(args.out) as out:
            summary = asyncio.run(_export(settings, options, out, args.workers, args.pseudonymize))
    except BrokenPipeError:
        # The reader (`| head`) went away: stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:  # a full disk, a file-size limit, an I/O error
        raise ExportError(
            f"--out {args.out}: {exc.strerror or exc} while writing; nothing was kept (the "
            "partial file is removed): free some space or write elsewhere"
        ) from None
    print_summary(summary, options, target, sys.stderr)
    return 0


async def _export(
    settings: Settings, options: ExportOptions, out: BinaryIO, workers: int, pseudonymize: bool
) -> Summary:
    db = await open_database(settings.database_url, busy_timeout=settings.sqlite_busy_timeout)
    try:
        if pseudonymize and options.pseudonym_secret is None:
            options = replace(options, pseudonym_secret=await _stored_secret(db))
        return await export(
            db,
            options,
            out,
            optout_users=settings.optout_users,
            progress=sys.stderr,
            workers=workers,
        )
    finally:
        await db.close()


async def _stored_secret(db: Database) -> str:
    """The database's pseudonym secret (made now if it has none), and where it is kept."""
    secret, new = await pseudonym_secret(db)
    made = "made a new pseudonym secret and kept it" if new else "pseudonyms use the secret kept"
    print(
        f"koalabot: {made} in the database ({safe_url(db.url)}, table settings); "
        "KOALABOT_PSEUDONYM_SECRET overrides it",
        file=sys.stderr,
    )
    return secret


@contextlib.contextmanager
def _output(path: str) -> Iterator[BinaryIO]:
    """stdout, or a file that appears (atomically) only once the export has succeeded; binary,
    as rows are encoded as UTF-8 already."""
    if path == "-":
        sys.stdout.flush()
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    if target.is_dir():
        raise ExportError(f"--out {path} is a directory; give a file name")
    if target.exists() and not target.is_file():  # /dev/null, a named pipe
        with open(target, "wb", buffering=1 << 20) as out:
            yield out
        return
    if not target.parent.is_dir():
        raise ExportError(f"--out {path}: the directory {target.parent} does not exist")
    fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with open(fd, "wb", buffering=1 << 20) as out:
            yield out
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
