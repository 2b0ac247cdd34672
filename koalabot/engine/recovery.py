"""Messages a crash left without an answer, answered (or told why not) once their platform
connects.

`Engine.open` finds them (koalabot.store.waiting: every stored user message of the last day with
no answer and no recorded reason not to answer it, after the crash's `streaming` answers became
`interrupted`). When a platform connects, each of its messages is handed back to the engine as a
kept message (`answer_kept`), oldest first, so one thread's messages queue for its turn in the
order they came and go through the same checks as any message (words, rate, shutting down). A
message older than ``ANSWER_WITHIN`` is not answered any more: its thread is told to send it
again, and it is declined so no later start looks at it again.

Kept in memory only, like the interrupted answers (orphans.py): a second crash before the
platform connects leaves them in the store, unanswered, for the next start to find again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Protocol

from koalabot.engine.notices import notify
from koalabot.engine.turns import ORDER_WAIT
from koalabot.events import ChatMessage, ReplySink, ThreadKey
from koalabot.store.models import utcnow
from koalabot.store.waiting import Waiting

log = logging.getLogger(__name__)

#: A message left unanswered at most this long ago is answered after the restart.
ANSWER_WITHIN = timedelta(hours=1)
#: On PostgreSQL, how old a message must be before a starting replica takes it for left behind:
#: a live replica may leave it without its thread's lock for up to ORDER_WAIT.
SETTLED = timedelta(seconds=ORDER_WAIT + 20)
TOO_OLD = (
    "I was restarted before I could answer your message from {when} UTC, and it is too old for "
    "me to answer now. Please send it again if you still need an answer."
)


class Resumer(Protocol):
    """What the recovery hands back to the engine (the Engine is one)."""

    def answer_kept(
        self, msg: ChatMessage, sink: ReplySink, stored: tuple[int, int] | None
    ) -> None: ...


class Declines(Protocol):
    """Where a message too old to answer is recorded as declined (the store's Repository)."""

    async def decline(self, message_id: int) -> None: ...


class Unanswered:
    """The messages an earlier process left without an answer, by platform."""

    def __init__(self, waiting: Iterable[Waiting] = ()) -> None:
        self._waiting: list[Waiting] = sorted(waiting, key=lambda w: w.message_id)
        self._telling: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._waiting)

    def resume(
        self,
        platform: str,
        sink_for: Callable[[ThreadKey], ReplySink],
        engine: Resumer,
        store: Declines,
        now: datetime | None = None,
    ) -> int:
        """Answer (or tell about) every waiting message of ``platform``, oldest first; how many
        are answered. Never suspends: each answer queues for its thread in order."""
        oldest = (now or utcnow()) - ANSWER_WITHIN
        mine = [w for w in self._waiting if w.where.platform == platform]
        self._waiting = [w for w in self._waiting if w.where.platform != platform]
        fresh = [w for w in mine if w.created_at >= oldest]
        for w in fresh:
            engine.answer_kept(_as_message(w), sink_for(w.where), (w.conversation_id, w.message_id))
        stale = [w for w in mine if w.created_at < oldest]
        if stale:
            task = asyncio.ensure_future(_tell_too_old(stale, sink_for, store))
            self._telling.add(task)
            task.add_done_callback(self._telling.discard)
        return len(fresh)


def _as_message(w: Waiting) -> ChatMessage:
    """The stored message as the platform delivered it (its delivery ids are claimed already)."""
    return ChatMessage(w.where, w.author, w.text, w.platform_message_id)


async def _tell_too_old(
    stale: list[Waiting], sink_for: Callable[[ThreadKey], ReplySink], store: Declines
) -> None:
    for w in stale:
        try:
            await store.decline(w.message_id)
        except Exception:  # told again at the next start: better twice than never
            log.warning("could not record message %d as declined", w.message_id)
        await notify(sink_for(w.where), TOO_OLD.format(when=f"{w.created_at:%Y-%m-%d %H:%M}"))


__all__ = ["ANSWER_WITHIN", "SETTLED", "TOO_OLD", "Unanswered"]
