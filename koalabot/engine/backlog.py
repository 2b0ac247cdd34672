"""What the engine does with messages and votes the store cannot take: keep them in the spool
(koalabot.store.spool), and once the store answers again, store them in the order they came and hand
each message back to the engine to be answered in its thread.

The backlog talks to the engine through one small Protocol, `KeptWork` (answer a kept message
once stored; record a kept vote), which the Engine satisfies: the backlog knows nothing of how
an answer is made or tracked for the shutdown.

Only an unreachable store makes the backlog wait: a kept message or vote the store refuses (its
data, not the connection) is set aside at once, one that fails for any other reason after a few
tries, so none holds up the others. Setting aside logs the item's kind and age, never its text,
and counts it in the `koalabot_spool_set_aside` metric; a set-aside message's thread is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Protocol

from koalabot.engine.notices import notify
from koalabot.errors import StoreError, StoreRefusedError
from koalabot.events import ChatMessage, FeedbackEvent, ReplySink, ThreadKey
from koalabot.metrics import Metrics
from koalabot.store.repository import Repository
from koalabot.store.spool import Spool, Spooled, SpooledVote

log = logging.getLogger(__name__)

#: Tries of a kept item that fails for a reason other than the store (a bug, a bad sink) before
#: it is set aside; one the store refuses is set aside at the first try.
MAX_TRIES = 3


class KeptWork(Protocol):
    """What the backlog hands back to the engine (the Engine is one)."""

    def answer_kept(
        self, msg: ChatMessage, sink: ReplySink, stored: tuple[int, int] | None
    ) -> None:
        """Start answering a kept message the store has just taken (``stored``: its
        conversation and message ids; None if it had it already). Must not suspend before the
        answer queues for its thread's turn."""
        ...

    async def record_vote(self, vote: FeedbackEvent, cast: datetime) -> object:
        """Record a kept vote, stamped with when it was cast. Raises StoreError."""
        ...


class Backlog:
    """The spool's messages and votes on their way into the store: kept while it is down,
    replayed by a background task once it is back, and always ahead of later ones."""

    def __init__(
        self,
        spool: Spool,
        repo: Repository,
        metrics: Metrics,
        retry_interval: float,
        work: KeptWork,
    ) -> None:
        self.spool = spool
        self.repo = repo
        self.metrics = metrics
        self.retry_interval = retry_interval
        self.work = work
        #: What answers a kept message: its platform's sinks once connected, else the sink it
        #: came with (while this process runs).
        self._sink_factories: dict[str, Callable[[ThreadKey], ReplySink]] = {}
        self._sinks: dict[str, ReplySink] = {}
        #: Held while kept votes are recorded, so none is recorded after a later vote.
        self._votes = asyncio.Lock()
        #: Kept messages being stored right now, each set once it is.
        self._storing: dict[str, asyncio.Event] = {}
        self._drainer: asyncio.Task[None] | None = None
        self._stopped = False
        #: Failed tries of kept items (by spool key, or "vote:<seq>") for reasons other than an
        #: unreachable or refusing store.
        self._failures: Counter[str] = Counter()

    # --- keeping -----------------------------------------------------------------------------

    def keep_message(self, msg: ChatMessage, arrived: datetime, sink: ReplySink) -> bool:
        """Keep a message the store failed to take; False if it is a redelivery of a kept one.
        Raises SpoolError when it cannot be kept."""
        entry = self.spool.add(msg, arrived)
        if entry is None:
            return False
        self._sinks[entry.key] = sink
        self._show()
        return True

    def keep_vote(self, vote: FeedbackEvent, cast: datetime) -> None:
        """Keep a vote the store failed to take. Raises SpoolError when it cannot be kept."""
        self.spool.add_vote(vote, cast)
        self._show()

    def connected(self, platform: str, sink_for: Callable[[ThreadKey], ReplySink]) -> None:
        """``sink_for`` gives a sink for any thread of ``platform`` from now on."""
        self._sink_factories[platform] = sink_for

    # --- ahead of what comes later -------------------------------------------------------------

    async def before_message(self, where: ThreadKey, sink: ReplySink) -> None:
        """Store the thread's kept messages (answered through ``sink`` if nothing else can),
        so a new message of the thread comes after them. Raises StoreError."""
        if not self.spool.holds(where):
            return
        for entry in self.spool.pending():
            if entry.message.where == where:
                found = self._sink_for(entry)
                await self._replay(entry, found if found is not None else sink)

    @contextlib.asynccontextmanager
    async def before_vote(self) -> AsyncIterator[None]:
        """Record the kept votes first, and hold them back while the block records a new one.
        Raises StoreError."""
        if not self.spool.votes_waiting():
            yield
            return
        async with self._votes:
            await self._replay_votes()
            yield

    def late(self, max_age: float) -> str | None:
        """Why the spool is unhealthy: its oldest item has waited over ``max_age`` seconds."""
        oldest = self.spool.oldest()
        waited = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
        self.metrics.spool_age.set(waited)
        if waited <= max_age:
            return None
        return f"the oldest kept message or vote has waited {waited:.0f} s (over {max_age:g} s)"

    # --- the background task -------------------------------------------------------------------

    def start(self) -> None:
        """Start replaying in the background, unless it runs already or was stopped."""
        if self._stopped:
            return
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
            self._drainer.add_done_callback(_log_failure)

    async def stop(self) -> None:
        """Stop replaying for good, as the bot stops (what is left stays in the spool for the
        next process)."""
        self._stopped = True
        drainer, self._drainer = self._drainer, None
        if drainer is not None and not drainer.done():
            drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drainer

    async def _drain(self) -> None:
        """Until no kept vote waits and no kept message can be answered: wait, try the store,
        and once it answers, record the votes, then store each kept message and answer it,
        oldest first."""
        while True:
            waiting = self._answerable()
            self._show()
            if not waiting and not self.spool.votes_waiting():
                return
            await asyncio.sleep(self.retry_interval)
            try:
                await self._round(waiting)
            except StoreError:
                log.info(
                    "database still unreachable; %d messages and %d votes wait in the spool",
                    len(self.spool),
                    self.spool.votes_waiting(),
                )

    def _answerable(self) -> list[tuple[Spooled, ReplySink]]:
        """The kept messages that have a sink to be answered through, oldest first."""
        found = ((entry, self._sink_for(entry)) for entry in self.spool.pending())
        return [(entry, sink) for entry, sink in found if sink is not None]

    async def _round(self, waiting: list[tuple[Spooled, ReplySink]]) -> None:
        """One try: the kept votes, then the kept messages. Raises StoreError."""
        await self.repo.ping()
        async with self._votes:
            await self._replay_votes()
        for entry, sink in waiting:
            try:
                await self._replay(entry, sink)
            except StoreError:
                raise
            except Exception:  # this one waits for the next round, a few times; the rest go on
                log.exception("could not replay a message kept in the spool")
                if self._failed_again(entry.key):
                    await self._set_aside(entry, sink)

    # --- replaying -------------------------------------------------------------------------------

    def _sink_for(self, entry: Spooled) -> ReplySink | None:
        factory = self._sink_factories.get(entry.message.where.platform)
        if factory is not None:
            return factory(entry.message.where)
        return self._sinks.get(entry.key)

    async def _replay(self, entry: Spooled, sink: ReplySink) -> None:
        if (storing := self._storing.get(entry.key)) is not None:
            await storing.wait()  # the other caller stores and answers it...
            if any(e.key == entry.key for e in self.spool.pending()):
                raise StoreError()  # ...unless the store failed it
            return
        storing = self._storing[entry.key] = asyncio.Event()
        try:
            stored = await self._store(entry)
        except StoreRefusedError:
            await self._set_aside(entry, self._sinks.get(entry.key) or sink)
            return
        finally:
            del self._storing[entry.key]
            storing.set()
        self.spool.done(entry)
        self._sinks.pop(entry.key, None)
        self._show()
        log.info("message kept in the spool since %s stored", entry.received_at.isoformat())
        # Answered alongside the rest: one thread's messages still take turns (its lock).
        self.work.answer_kept(entry.message, sink, stored)
        # One step of its task: nothing suspends it before it queues for its thread's lock, so
        # it is answered before any later message of the thread.
        await asyncio.sleep(0)

    async def _store(self, entry: Spooled) -> tuple[int, int] | None:
        """Store a kept message; its conversation and message ids, unless it has its answer."""
        msg = entry.message
        # The spool's key is one of the delivery ids: stored once, even if the bot stops
        # before the spool forgets it.
        keys = (*msg.dedupe_keys, entry.key)
        stored = await self.repo.add_user_message(
            msg.where, msg.user, msg.text, msg.message_id, keys, received_at=entry.received_at
        )
        if stored is None:
            # Taken in already: by this bot before it stopped, between storing the message
            # and forgetting it here, or by a commit whose reply the connection lost. It is
            # answered unless it has an answer already.
            stored = await self.repo.unanswered(keys)
        return stored

    async def _replay_votes(self) -> None:
        for kept in self.spool.pending_votes():
            try:
                await self.work.record_vote(kept.vote, kept.received_at)
            except StoreRefusedError:
                await self._set_aside(kept, None)
                continue
            except StoreError:
                raise
            except Exception:
                log.exception("could not replay a vote kept in the spool")
                if self._failed_again(f"vote:{kept.seq}"):
                    await self._set_aside(kept, None)
                continue
            self.spool.vote_done(kept)
        self._show()

    # --- what the store keeps refusing -----------------------------------------------------------

    def _failed_again(self, key: str) -> bool:
        """Count one more failed try of a kept item; True once it has failed too often."""
        self._failures[key] += 1
        return self._failures[key] >= MAX_TRIES

    async def _set_aside(self, kept: Spooled | SpooledVote, sink: ReplySink | None) -> None:
        """Move a kept item the store refuses out of the others' way, and tell its thread."""
        kind = "message" if isinstance(kept, Spooled) else "vote"
        self.spool.set_aside(kept)
        self.metrics.set_aside.labels(kind).inc()
        self._failures.pop(kept.key if isinstance(kept, Spooled) else f"vote:{kept.seq}", None)
        self._show()
        # Its kind and age only: the text stays out of the log.
        log.warning("a %s kept since %s was set aside", kind, kept.received_at.isoformat())
        if isinstance(kept, Spooled) and sink is not None:
            self._sinks.pop(kept.key, None)
            await notify(sink, StoreRefusedError.user_message)

    def _show(self) -> None:
        self.metrics.spooled.set(len(self.spool))
        self.metrics.spooled_votes.set(self.spool.votes_waiting())


def _log_failure(drainer: asyncio.Task[None]) -> None:
    if not drainer.cancelled() and (exc := drainer.exception()) is not None:
        log.error(
            "replaying the spool stopped; it resumes with the next kept message or vote",
            exc_info=exc,
        )


__all__ = ["Backlog", "KeptWork"]
