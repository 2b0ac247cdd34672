"""Work in flight: the tasks a shutdown lets finish within a grace period, then cancels.

One helper for the three places that stop politely — each adapter (listeners still answering)
and the engine (answers still streaming) — so they agree on what "finish, then cancel" means:
work that starts while the shutdown waits is waited for too (a listener that was already
running may still hand the engine an answer), the deadline is one deadline for all of it, and
whatever is cancelled has ended before ``finish`` returns, so nothing runs on after the
connection it needs is closed.

A trade-off: ``track`` counts the *current* task (the one the SDK created for an event), so
cancelling it after the grace period cancels the whole listener, not just one await in it. That
is the point — a half-handled event is retried by the platform or told it was interrupted — but
it means the tracked block must not swallow ``CancelledError``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any


class InFlight:
    """A set of running tasks that ``finish`` waits for, then cancels after a grace period."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        """How many tasks are still running."""
        return sum(1 for task in self._tasks if not task.done())

    def add(self, task: asyncio.Task[Any]) -> None:
        """Count ``task`` until it is done."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count the current task while the block runs (a no-op outside a task or when the
        task is already counted, so blocks may nest)."""
        task = asyncio.current_task()
        if task is None or task in self._tasks:
            yield
            return
        self._tasks.add(task)
        try:
            yield
        finally:
            self._tasks.discard(task)

    async def wait(self, within: float) -> bool:
        """Wait until nothing is in flight, work started meanwhile included; False if
        ``within`` seconds ran out first. The calling task itself is never waited for."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while pending := self._others():
            left = deadline - loop.time()
            if left <= 0:
                return False
            await asyncio.wait(pending, timeout=left)
        return True

    async def finish(self, grace: float) -> int:
        """Let work in flight finish for ``grace`` seconds, then cancel the rest and wait for it
        to end. Returns how many tasks were cancelled."""
        if await self.wait(grace):
            return 0
        late = self._others()
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        return len(late)

    def _others(self) -> set[asyncio.Task[Any]]:
        me = asyncio.current_task()
        return {task for task in self._tasks if task is not me and not task.done()}
