"""Answers a crash cut off, until their threads are told.

At start the store marks answers an earlier process left `streaming` as `interrupted`
(`Repository.recover_interrupted`); their placeholders still say "…" in the thread. Each is turned
into a notice once its platform connects (`tell_platform`), or when its thread's next message
arrives, whichever comes first. Kept in memory only: a second crash before they are told leaves
the placeholders as they are, which costs a stale "…", never a wrong answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from koalabot.engine.notices import INTERRUPTED
from koalabot.events import ReplySink, ThreadKey
from koalabot.store.repository import Orphan

log = logging.getLogger(__name__)


class Orphans:
    """The interrupted answers of an earlier process, by thread."""

    def __init__(self, orphans: Iterable[Orphan] = ()) -> None:
        self._by_thread: dict[ThreadKey, list[Orphan]] = {}
        self.add(orphans)

    def add(self, orphans: Iterable[Orphan]) -> None:
        for orphan in orphans:
            self._by_thread.setdefault(orphan.where, []).append(orphan)

    def __contains__(self, where: ThreadKey) -> bool:
        return where in self._by_thread

    async def tell_platform(self, platform: str, sink_for: Callable[[ThreadKey], ReplySink]) -> int:
        """Tell every thread of ``platform`` (``sink_for`` gives a sink for one); how many."""
        told = 0
        for where in [w for w in self._by_thread if w.platform == platform]:
            told += await self.tell(where, sink_for(where))
        return told

    async def tell(self, where: ThreadKey, sink: ReplySink) -> int:
        """Turn the thread's interrupted placeholders into a notice; how many there were."""
        orphans = self._by_thread.pop(where, [])
        for orphan in orphans:
            try:
                if orphan.platform_message_id is None:
                    await sink.notice(INTERRUPTED)
                else:
                    await sink.edit(orphan.platform_message_id, f"⚠️ {INTERRUPTED}")
            except Exception:
                log.warning("could not tell answer %d was interrupted", orphan.answer_id)
        return len(orphans)


__all__ = ["Orphans"]
