"""Whose turn it is in a thread: one answer at a time per conversation, in the order the
messages came.

In one process an asyncio lock per conversation orders the answers; the store's thread lock
(PostgreSQL's advisory lock, nothing on SQLite) keeps replicas from interleaving. Across replicas
the lock alone does not give the order, so on PostgreSQL an answer also waits, briefly, for
earlier messages of its thread to get theirs: a replica that died holding one must not hold the
thread up for long, so the wait is bounded (``order_wait``) rather than exact.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

#: Longest an answer waits for earlier messages of its thread to get theirs first.
ORDER_WAIT = 10.0


class ThreadLocks(Protocol):
    """What the turns need of the store (its ``Repository`` fits)."""

    def thread_lock(self, conversation_id: int) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while one process answers in the thread (across replicas)."""
        ...

    async def earlier_waiting(self, conversation_id: int, message_id: int) -> bool:
        """Whether an earlier message of the thread still waits for its answer."""
        ...


@dataclass
class _LockEntry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Turns:
    """Hands out each thread's turn: held while one answer is made."""

    def __init__(self, store: ThreadLocks, dialect: str, order_wait: float = ORDER_WAIT) -> None:
        self.store = store
        #: One SQLite process orders answers by its lock alone.
        self.waits_for_replicas = dialect == "postgresql"
        self.order_wait = order_wait
        self._locks: dict[int, _LockEntry] = {}

    @contextlib.asynccontextmanager
    async def turn(
        self, conversation_id: int, parent_id: int, in_order: bool
    ) -> AsyncIterator[None]:
        """Hold the thread's lock; with ``in_order``, once earlier messages of the thread have
        their answers (waiting at most ``order_wait``: their handler may have died)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.order_wait
        delay = 0.01
        while True:
            async with self._locked(conversation_id):
                if not (
                    in_order
                    and self.waits_for_replicas
                    and loop.time() < deadline
                    and await self.store.earlier_waiting(conversation_id, parent_id)
                ):
                    yield
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    @contextlib.asynccontextmanager
    async def _locked(self, conversation_id: int) -> AsyncIterator[None]:
        entry = self._locks.setdefault(conversation_id, _LockEntry())
        entry.users += 1
        try:
            async with entry.lock, self.store.thread_lock(conversation_id):
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                self._locks.pop(conversation_id, None)


__all__ = ["ORDER_WAIT", "ThreadLocks", "Turns"]
