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
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

from koalabot.export.options import ExportOptions
from koalabot.export.rows import RowBuilder, encode_row
from koalabot.export.summary import Progress, Summary
from koalabot.store.battles import ThreadBattles
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
    #: Per conversation, its judged battles.
    battles: Mapping[int, ThreadBattles] = field(default_factory=dict)


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
        self.builder = RowBuilder(
            job.options, Summary(str(job.options.format)), job.optouts, job.battles
        )
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


class _Lanes:
    """Where ranges run: lane 0 is a thread of this process, lane 1 (with workers) the pool of
    forked ones. Each range goes to the lane holding least for its capacity, and ranges are
    handed out at most ``window`` ahead of the one being written."""

    def __init__(
        self,
        job: Job,
        workers: int,
        run_here: Executor,
        pool: Executor | None,
        local: RangeExporter,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.last = job.threads.last
        self.firsts = range(job.threads.first, self.last + 1, RANGE)
        self.executors: list[tuple[Executor, Callable[[int, int], Block]]] = [
            (run_here, local.export)
        ]
        if pool is not None:
            self.executors.append((pool, _export_range))
        #: Ranges each lane may hold at once, and holds now.
        self.capacity = [QUEUED] if pool is None else [QUEUED, QUEUED * (workers - 1)]
        self.holding = [0] * len(self.capacity)
        self.blocks: dict[int, asyncio.Future[Block]] = {}
        self.window = workers * (1 + AHEAD)
        self.handed = self.written = 0
        self.closing = False

    def hand_out(self) -> None:
        """Start ranges until the window is full or every lane holds all it may."""
        capacity, holding = self.capacity, self.holding
        while self.handed < len(self.firsts) and self.handed - self.written < self.window:
            if self.closing:
                return
            lane = min(range(len(capacity)), key=lambda i: holding[i] / capacity[i])
            if holding[lane] >= capacity[lane]:
                return
            first = self.firsts[self.handed]
            executor, export = self.executors[lane]
            block = self.loop.run_in_executor(
                executor, export, first, min(first + RANGE - 1, self.last)
            )
            holding[lane] += 1
            block.add_done_callback(functools.partial(self._finished, lane))
            self.blocks[self.handed] = block
            self.handed += 1

    def _finished(self, lane: int, _: asyncio.Future[Block]) -> None:
        self.holding[lane] -= 1
        self.hand_out()

    def pending(self) -> bool:
        """Whether a range is still to be written."""
        return self.written < len(self.firsts)

    async def next_block(self) -> Block:
        """The next range's block in order (and more ranges handed out in its place)."""
        block = await self.blocks.pop(self.written)
        self.written += 1
        self.hand_out()
        return block

    def close(self) -> None:
        """Hand out nothing more and cancel the ranges not yet started."""
        self.closing = True
        for future in self.blocks.values():
            future.cancel()


def _worker_count(job: Job, workers: int) -> int:
    """Processes to use: one with --dedupe or without fork, never more than there are ranges."""
    if job.options.dedupe or not can_fork():
        return 1
    ranges = len(range(job.threads.first, job.threads.last + 1, RANGE))
    return max(1, min(workers, ranges))


async def export_ranges(
    job: Job, workers: int, write: Callable[[bytes], object], summary: Summary, bar: Progress
) -> None:
    """Export every range of ``job``'s conversations on a thread of this process and
    ``workers - 1`` forked ones, each range to the least busy; write the blocks in order,
    adding them up in ``summary``."""
    workers = _worker_count(job, workers)
    spool = tempfile.mkdtemp(prefix="koalabot-export-") if workers > 1 else ""
    pool = _fork_workers(job, workers - 1, spool) if workers > 1 else None
    here = ThreadPoolExecutor(1, thread_name_prefix="koalabot-export")
    local = RangeExporter(job)
    lanes = _Lanes(job, workers, here, pool, local)
    try:
        lanes.hand_out()
        streamed = 0
        while lanes.pending():
            block = await lanes.next_block()
            write(block.take())
            summary.add(block.summary)
            streamed += block.streamed
            bar.update(streamed, summary.rows)
    finally:
        lanes.close()
        await asyncio.shield(asyncio.get_running_loop().run_in_executor(here, local.close))
        here.shutdown()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if spool:
            shutil.rmtree(spool, ignore_errors=True)


__all__ = ["AHEAD", "QUEUED", "RANGE", "Block", "Job", "RangeExporter", "can_fork", "export_ranges"]
