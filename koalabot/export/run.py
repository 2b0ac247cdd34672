"""`koalabot export`, the run: votes in the store → JSON lines in the format a trainer reads.

The pieces: `options` (what to export), `view` (each thread, and which voted answers become
rows), `rows` (one layout per format), `summary` (progress and the counts at the end), `redact`
and `dedupe`. This module streams threads from the store through a `RowBuilder` to the output;
from a SQLite file it hands ranges of conversations to `parallel` instead. Memory holds one
conversation at a time (a few ranges with workers), and the rows are the same either way.

Votes of opted-out users do not count, and no row holds a thread with an opted-out user's
message; ``optout_users`` from settings join the opt-outs stored by the bot.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncGenerator, Callable, Collection
from typing import BinaryIO, TextIO, cast

from koalabot.export.options import ExportOptions
from koalabot.export.parallel import Job, export_ranges
from koalabot.export.rows import RowBuilder, encode_row
from koalabot.export.summary import Progress, Summary
from koalabot.store.battles import thread_battles
from koalabot.store.database import Database
from koalabot.store.threads import (
    Thread,
    ThreadScope,
    count_threads,
    optout_keys,
    sqlite_threads,
    stream_threads,
)


def byte_writer(out: TextIO | BinaryIO) -> Callable[[bytes], object]:
    """Writes encoded rows to ``out``: as they are to a binary stream, decoded to a text one."""
    if isinstance(out, io.RawIOBase | io.BufferedIOBase):
        return out.write
    write = cast(TextIO, out).write
    return lambda data: write(data.decode())


async def export(
    db: Database,
    options: ExportOptions,
    out: TextIO | BinaryIO,
    *,
    optout_users: Collection[str] = (),
    progress: TextIO | None = None,
    workers: int = 1,
) -> Summary:
    """Stream every row of ``options.format`` from the store to ``out`` as JSON lines.

    ``optout_users`` ("platform:id", from settings) join the opt-outs stored by the bot. Memory
    holds one conversation at a time (a range of them from a SQLite file, on up to ``workers``
    processes; the rows are the same for any number). ``progress`` gets a progress line when it
    is a terminal.
    """
    optouts = set(optout_users) | await optout_keys(db)
    battles = await thread_battles(db, optouts)
    scope = ThreadScope(
        platform=options.platform,
        channel=options.channel,
        until=options.until,
        with_prompts=options.string_prompt,
    )
    summary = Summary(str(options.format))
    total = await count_threads(db, scope) if progress is not None and progress.isatty() else 0
    bar = Progress(progress, total)
    write = byte_writer(out)
    try:
        ranged = await sqlite_threads(db, scope, optouts)
        if ranged is not None:
            job = Job(ranged, options, frozenset(optouts), battles)
            await export_ranges(job, workers, write, summary, bar)
        else:
            builder = RowBuilder(options, summary, optouts, battles)
            await _stream(stream_threads(db, scope, optouts), builder, write, bar)
    finally:
        bar.close()
    return summary


async def _stream(
    threads: AsyncGenerator[Thread, None],
    builder: RowBuilder,
    write: Callable[[bytes], object],
    bar: Progress,
) -> None:
    """Every row of ``threads``, one conversation at a time, on this process."""
    summary = builder.summary
    # aclosing: a failed write (full disk, closed pipe) still ends the query cleanly.
    async with contextlib.aclosing(threads):
        streamed = 0
        async for thread in threads:
            streamed += 1
            for row in builder.rows(thread):
                write(encode_row(row))
                summary.rows += 1
            bar.update(streamed, summary.rows)


__all__ = ["byte_writer", "export"]
