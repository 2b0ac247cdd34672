"""`koalabot export` from a SQLite file, a range of conversation ids at a time, this process and
forked copies of it (`--workers` in all) taking turns: each range becomes one block of JSON lines,
and blocks are written in range order, so the file is the same for any number of workers.

Ranges go to the workers ahead of the writer, but only a few: memory holds a handful of blocks
however large the store. `--dedupe` needs every question seen before, so it keeps one worker.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import signal
import sqlite3
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

from koalabot.export import ExportOptions, Progress, RowBuilder, Summary, encode_row
from koalabot.store.training import SqliteThreads

#: Conversation ids per range: a range's rows wait in memory until their turn to be written.
RANGE = 1024
#: Ranges handed to each worker beyond the one being written.
AHEAD = 2


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


class RangeExporter:
    """Exports one range after another with one row builder (its pseudonym cache carries over)
    and one SQLite connection, used only on the thread that opened it."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.builder = RowBuilder(job.options, Summary(str(job.options.format)), job.optouts)
        self._conn: sqlite3.Connection | None = None

    def export(self, first: int, last: int) -> Block:
        """The block of conversations ``first`` to ``last``."""
        threads = self.job.threads
        if self._conn is None:
            self._conn = threads.connect()
        summary = self.builder.summary = Summary(str(self.job.options.format))
        lines: list[bytes] = []
        streamed = 0
        for thread in threads.read(self._conn, first, last):
            streamed += 1
            lines += map(encode_row, self.builder.rows(thread))
        summary.rows = len(lines)
        return Block(b"".join(lines), streamed, summary)

    def close(self) -> None:
        """Close the connection (on the thread that opened it)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# The exporter of a worker process, made once when the process starts.
_worker: RangeExporter | None = None


def _start_worker(job: Job) -> None:
    global _worker
    # Ctrl-C reaches every process of the terminal's group: the parent alone handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker = RangeExporter(job)


def _export_range(first: int, last: int) -> Block:
    assert _worker is not None, "not a worker process"
    return _worker.export(first, last)


def can_fork() -> bool:
    """Whether workers can start as copies of this process (not on Windows)."""
    return "fork" in multiprocessing.get_all_start_methods()


def _fork_workers(job: Job, processes: int) -> ProcessPoolExecutor:
    """``processes`` workers, forked now: before this process starts any thread of its own."""
    pool = ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_start_worker,
        initargs=(job,),
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
    """Export every range of ``job``'s conversations, taking turns between a thread of this
    process and ``workers - 1`` forked ones; write the blocks in order, adding them up in
    ``summary``."""
    threads = job.threads
    firsts = range(threads.first, threads.last + 1, RANGE)
    if job.options.dedupe or not can_fork():
        workers = 1
    workers = max(1, min(workers, len(firsts)))
    loop = asyncio.get_running_loop()
    pool = _fork_workers(job, workers - 1) if workers > 1 else None
    here = ThreadPoolExecutor(1, thread_name_prefix="koalabot-export")
    local = RangeExporter(job)
    blocks: deque[asyncio.Future[Block]] = deque()
    handed = 0

    def hand_out() -> None:
        nonlocal handed
        if handed == len(firsts):
            return
        first = firsts[handed]
        last = min(first + RANGE - 1, threads.last)
        if pool is None or handed % workers == 0:
            blocks.append(loop.run_in_executor(here, local.export, first, last))
        else:
            blocks.append(loop.run_in_executor(pool, _export_range, first, last))
        handed += 1

    try:
        for _ in range(workers * (1 + AHEAD)):
            hand_out()
        streamed = 0
        while blocks:
            block = await blocks.popleft()
            hand_out()
            write(block.data)
            summary.add(block.summary)
            streamed += block.streamed
            bar.update(streamed, summary.rows)
    finally:
        for future in blocks:
            future.cancel()
        await asyncio.shield(loop.run_in_executor(here, local.close))
        here.shutdown()
        if pool is not None:
            pool.shutdown(cancel_futures=True)


__all__ = ["AHEAD", "RANGE", "Block", "Job", "RangeExporter", "can_fork", "export_ranges"]
