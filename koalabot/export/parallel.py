"""`koalabot export` from a SQLite file, a range of conversation ids at a time, on this process and
forked copies of it (`--workers` in all): each range becomes one block of JSON lines, and blocks
are written in range order, so the file is the same for any number of workers.

Each range goes to whichever worker has the least waiting, so a worker that runs faster takes
more ranges instead of standing idle. Ranges are handed out only a few ahead of the writer:
memory holds a handful of blocks however large the store. `--dedupe` needs every question seen
before, so it keeps one worker.

A forked worker leaves its block in a file of a private spool directory and sends back only the
name. Sent through the pool's pipe, a block crosses in 64 KiB pieces, each waiting for this
process's busy thread to let go of the GIL, and the worker stalls until the last one is read.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import multiprocessing
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

from koalabot.export.options import ExportOptions
from koalabot.export.rows import RowBuilder, encode_row
from koalabot.export.summary import Progress, Summary
from koalabot.store.threads import SqliteThreads, ThreadReader

#: Conversation ids per range: a range's rows wait in memory until their turn to be written.
RANGE = 1024
#: Ranges handed out per worker beyond the one being written: while the writer waits for a slow
#: range, the other workers go on with the next ones.
AHEAD = 4
#: Ranges each worker holds at once: the one it runs and the ones after it, so it never waits
#: for this process to hand it more.
QUEUED = 3


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to export any range (plain data, copied into each worker)."""

    threads: SqliteThreads
    options: ExportOptions
    optouts: frozenset[str]


@dataclass
class Block:
    """One range exported: its JSON lines, how many conversations were read, and its summary."""

    data: bytes
    streamed: int
    summary: Summary
    #: Where a forked worker left the JSON lines instead (``data`` is then empty).
    spooled: str | None = None

    def take(self) -> bytes:
        """The JSON lines, read out of the spool file (and the file removed) if there is one."""
        if self.spooled is None:
            return self.data
        with open(self.spooled, "rb") as spool:
            data = spool.read()
        os.unlink(self.spooled)
        return data


class RangeExporter:
    """Exports one range after another with one row builder (its pseudonym cache carries over)
    and one reader of the store, used only on the thread that opened it."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.builder = RowBuilder(job.options, Summary(str(job.options.format)), job.optouts)
        self._reader: ThreadReader | None = None

    def export(self, first: int, last: int) -> Block:
        """The block of conversations ``first`` to ``last``."""
        if self._reader is None:
            self._reader = self.job.threads.open()
        summary = self.builder.summary = Summary(str(self.job.options.format))
        lines: list[bytes] = []
        streamed = 0
        for thread in self._reader.read(first, last):
            streamed += 1
            lines += map(encode_row, self.builder.rows(thread))
        summary.rows = len(lines)
        return Block(b"".join(lines), streamed, summary)

    def close(self) -> None:
        """Close the reader (on the thread that opened it)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None


# The exporter of a worker process and its spool directory, set once when the process starts.
_worker: RangeExporter | None = None
_spool = ""


def _start_worker(job: Job, spool: str) -> None:
    global _worker, _spool
    # Ctrl-C reaches every process of the terminal's group: the parent alone handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker, _spool = RangeExporter(job), spool


def _export_range(first: int, last: int) -> Block:
    assert _worker is not None, "not a worker process"
    block = _worker.export(first, last)
    path = os.path.join(_spool, f"{first}.jsonl")
    with open(path, "wb") as spool:
        spool.write(block.data)
    block.data, block.spooled = b"", path
    return block


def can_fork() -> bool:
    """Whether workers can start as copies of this process (not on Windows)."""
    return "fork" in multiprocessing.get_all_start_methods()


def _fork_workers(job: Job, processes: int, spool: str) -> ProcessPoolExecutor:
    """``processes`` workers, forked now: before this process starts any thread of its own."""
    pool = ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_start_worker,
        initargs=(job, spool),
    )
    # Objects that exist now stay out of the workers' garbage collector, which would otherwise
    # write to, and so copy, every page of memory they share with this process.
    gc.freeze()
    try:
        pool.submit(int).result()  # the pool forks its workers on its first task
    finally:
        gc.unfreeze()
    return pool


async def export_ranges(
    job: Job, workers: int, write: Callable[[bytes], object], summary: Summary, bar: Progress
) -> None:
    """Export every range of ``job``'s conversations on a thread of this process and
    ``workers - 1`` forked ones, each range to the least busy; write the blocks in order,
    adding them up in ``summary``."""
    threads = job.threads
    firsts = range(threads.first, threads.last + 1, RANGE)
    if job.options.dedupe or not can_fork():
        workers = 1
    workers = max(1, min(workers, len(firsts)))
    loop = asyncio.get_running_loop()
    spool = tempfile.mkdtemp(prefix="koalabot-export-") if workers > 1 else ""
    pool = _fork_workers(job, workers - 1, spool) if workers > 1 else None
    here = ThreadPoolExecutor(1, thread_name_prefix="koalabot-export")
    local = RangeExporter(job)
    # Lanes: this process's thread, then the pool of forked workers; ranges each one holds.
    capacity = [QUEUED] if pool is None else [QUEUED, QUEUED * (workers - 1)]
    holding = [0] * len(capacity)
    blocks: dict[int, asyncio.Future[Block]] = {}
    window = workers * (1 + AHEAD)
    handed = written = 0
    closing = False

    def hand_out() -> None:
        nonlocal handed
        while handed < len(firsts) and handed - written < window and not closing:
            lane = min(range(len(capacity)), key=lambda i: holding[i] / capacity[i])
            if holding[lane] >= capacity[lane]:
                return
            first = firsts[handed]
            last = min(first + RANGE - 1, threads.last)
            if lane == 0:
                block = loop.run_in_executor(here, local.export, first, last)
            else:
                block = loop.run_in_executor(pool, _export_range, first, last)
            holding[lane] += 1
            block.add_done_callback(functools.partial(finished, lane))
            blocks[handed] = block
            handed += 1

    def finished(lane: int, _: asyncio.Future[Block]) -> None:
        holding[lane] -= 1
        hand_out()

    try:
        hand_out()
        streamed = 0
        while written < len(firsts):
            block = await blocks.pop(written)
            written += 1
            hand_out()
            write(block.take())
            summary.add(block.summary)
            streamed += block.streamed
            bar.update(streamed, summary.rows)
    finally:
        closing = True
        for future in blocks.values():
            future.cancel()
        await asyncio.shield(loop.run_in_executor(here, local.close))
        here.shutdown()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if spool:
            shutil.rmtree(spool, ignore_errors=True)


__all__ = ["AHEAD", "QUEUED", "RANGE", "Block", "Job", "RangeExporter", "can_fork", "export_ranges"]
