"""The newest messages of busy threads, and their conversation ids, kept between answers on a
SQLite file.

Every answer needs the tail of its thread, usually the same hundred-odd messages as the answer
before plus the two or three written since. Reading them all again costs more than the rest of
the answer's bookkeeping, so the repository keeps each recent thread's tail and reads only the
messages newer than it. A kept tail is trusted only while nothing but this process has written
to the database: SQLite's ``PRAGMA data_version``, read on the fast lane's own connection,
changes whenever another connection commits (``koalabot forget`` in another process, say), and
then everything kept is dropped. Rows whose state may still change (an answer being streamed)
are never kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from koalabot.events import ThreadKey
from koalabot.store.records import StoredMessage

#: Threads whose tails are kept (each at most one page of messages).
KEPT_THREADS = 64
#: Threads whose conversation ids are kept.
KEPT_IDS = 4096
#: Statuses a message never leaves.
FINAL = frozenset({"ok", "failed", "interrupted", "too_long"})


@dataclass(frozen=True)
class Tail:
    """A thread's newest settled messages, newest first."""

    messages: tuple[StoredMessage, ...]
    #: Newest message id the tail accounts for: later messages are read from the database.
    last: int
    #: How many of the thread's messages are older than the tail.
    older: int


class RecentThreads:
    """Conversation ids and tails of recently answered threads, valid for one
    ``data_version`` of the fast lane's connection."""

    def __init__(self, threads: int = KEPT_THREADS, ids: int = KEPT_IDS) -> None:
        self._max_tails, self._max_ids = threads, ids
        self._version: int | None = None
        self._tails: OrderedDict[int, Tail] = OrderedDict()
        self._ids: OrderedDict[ThreadKey, int] = OrderedDict()

    def sync(self, version: int) -> None:
        """Forget everything when another connection has written since the last call."""
        if version != self._version:
            self._version = version
            self._tails.clear()
            self._ids.clear()

    def conversation(self, where: ThreadKey) -> int | None:
        """The kept id of the thread's conversation."""
        return self._ids.get(where)

    def keep_conversation(self, where: ThreadKey, conversation_id: int) -> None:
        """Remember a conversation that was committed before the running transaction."""
        self._ids[where] = conversation_id
        if len(self._ids) > self._max_ids:
            self._ids.popitem(last=False)

    def tail(self, conversation_id: int) -> Tail | None:
        """The kept tail of a thread."""
        tail = self._tails.get(conversation_id)
        if tail is not None:
            self._tails.move_to_end(conversation_id)
        return tail

    def keep_tail(
        self, conversation_id: int, newest_first: Sequence[StoredMessage], older: int, fresh: int
    ) -> None:
        """Keep a thread's newest messages, all but the first ``fresh`` already settled: those
        older than any still unsettled one."""
        unsettled = [m.id for m in newest_first[:fresh] if m.status not in FINAL]
        if unsettled:
            cut = min(unsettled)
            kept = tuple(m for m in newest_first if m.id < cut)
            last = cut - 1
        else:
            kept = tuple(newest_first)
            last = kept[0].id if kept else 0
        if not kept:
            self._tails.pop(conversation_id, None)
            return
        self._tails[conversation_id] = Tail(kept, last, older)
        self._tails.move_to_end(conversation_id)
        if len(self._tails) > self._max_tails:
            self._tails.popitem(last=False)


__all__ = ["FINAL", "KEPT_THREADS", "RecentThreads", "Tail"]
