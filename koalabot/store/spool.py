"""Messages and votes that arrived while the conversation store was unreachable, kept on local
disk until the store is back: the engine then stores them (with the time they arrived) and
answers the messages.

The spool is a small SQLite file of its own, through the standard library's sqlite3: each
message or vote is one committed row, so a crash loses none, and nothing of the conversation store's
machinery (SQLAlchemy, migrations, the network) has to work for it. Its calls block for a
millisecond or so; they run only while the store is down.

A kept item the store keeps refusing (not merely unreachable) is moved to a ``set_aside`` table of
the same file, so it never holds up the others; `forget` deletes a person's items from every table
of the file, set-aside ones included.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict

from koalabot.errors import KoalabotError
from koalabot.events import ChatMessage, FeedbackEvent, ThreadKey
from koalabot.files import private_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spooled (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    received_at TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS spooled_keys (
    dedupe_key TEXT PRIMARY KEY,
    key TEXT NOT NULL REFERENCES spooled(key) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS spooled_votes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    vote TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS set_aside (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    received_at TEXT NOT NULL,
    body TEXT NOT NULL
);
"""


#: A person's kept and set-aside messages and votes (parameters: user id, platform).
_MINE = "json_extract({0}, '$.user') = ? AND json_extract({0}, '$.{1}') = ?"
_FORGET = (
    "DELETE FROM spooled WHERE " + _MINE.format("message", "where[0]"),
    "DELETE FROM spooled_votes WHERE " + _MINE.format("vote", "platform"),
    "DELETE FROM set_aside WHERE kind = 'message' AND " + _MINE.format("body", "where[0]"),
    "DELETE FROM set_aside WHERE kind = 'vote' AND " + _MINE.format("body", "platform"),
)


class SpoolError(KoalabotError):
    """The spool cannot keep a message or vote (full, or its file cannot be written)."""

    user_message = (
        "I could not reach my memory (the database), and could not keep your message for "
        "later either. Please send it again in a few minutes."
    )

    def __init__(self, detail: str) -> None:
        # The detail (the file, why) is for the log; the person in the chat gets user_message.
        Exception.__init__(self, detail)


@dataclass(frozen=True)
class Spooled:
    """A message kept while the store was unreachable."""

    #: The spool's own id for it, also stored as one of the message's delivery ids, so the
    #: message is stored once even if the bot stops between storing it and forgetting it here.
    key: str
    message: ChatMessage
    received_at: datetime


@dataclass(frozen=True)
class SpooledVote:
    """A vote (or a vote taken back) kept while the store was unreachable."""

    seq: int
    vote: FeedbackEvent
    received_at: datetime


class Spool:
    """The messages and votes waiting for the store, oldest first, in a SQLite file created on
    first use."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self._conn: sqlite3.Connection | None = None
        #: Kept messages by thread and the number of kept votes, read once: every message and
        #: vote asks whether any are kept.
        self._threads: Counter[ThreadKey] | None = None
        self._votes: int | None = None

    def problem(self) -> str | None:
        """Why the spool could not be written, if it is plain now (checked when the bot starts,
        rather than found out while the database is down)."""
        folder = self.path.parent
        if not folder.is_dir():
            return f"its folder {folder} does not exist"
        if self.path.exists():
            return None if os.access(self.path, os.W_OK) else f"{self.path} is not writable"
        return None if os.access(folder, os.W_OK) else f"its folder {folder} is not writable"

    def _open(self, create: bool) -> sqlite3.Connection | None:
        if self._conn is None:
            if not create and not self.path.exists():
                return None
            try:
                private_file(self.path)  # 0600, and so its journal
                conn = sqlite3.connect(self.path, isolation_level=None)
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute("PRAGMA secure_delete = ON")  # forgotten text leaves the file too
                conn.executescript(_SCHEMA)
            except (sqlite3.Error, OSError) as exc:
                raise SpoolError(f"cannot open the spool {self.path}: {exc}") from exc
            self._conn = conn
        return self._conn

    def add(self, message: ChatMessage, received_at: datetime) -> Spooled | None:
        """Keep one message; None when one of its delivery ids is already kept (a redelivery)."""
        conn = self._open(create=True)
        assert conn is not None
        threads = self._by_thread()
        entry = Spooled(f"spool:{uuid.uuid4().hex}", message, received_at)
        try:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                self._check_room(conn)
                conn.execute(
                    "INSERT INTO spooled (key, received_at, message) VALUES (?, ?, ?)",
                    (entry.key, received_at.isoformat(), json.dumps(_encode(message))),
                )
                conn.executemany(
                    "INSERT INTO spooled_keys (dedupe_key, key) VALUES (?, ?)",
                    [(k, entry.key) for k in dict.fromkeys(message.dedupe_keys)],
                )
        except sqlite3.IntegrityError:
            return None
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot write the spool {self.path}: {exc}") from exc
        threads[message.where] += 1
        return entry

    def add_vote(self, vote: FeedbackEvent, received_at: datetime) -> SpooledVote:
        """Keep one vote (or one taken back)."""
        conn = self._open(create=True)
        assert conn is not None
        waiting = self.votes_waiting()
        body = json.dumps(dataclasses.asdict(vote))
        try:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                self._check_room(conn)
                seq = conn.execute(
                    "INSERT INTO spooled_votes (received_at, vote) VALUES (?, ?)",
                    (received_at.isoformat(), body),
                ).lastrowid
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot write the spool {self.path}: {exc}") from exc
        self._votes = waiting + 1
        assert seq is not None
        return SpooledVote(seq, vote, received_at)

    def _check_room(self, conn: sqlite3.Connection) -> None:
        (count,) = conn.execute(
            "SELECT (SELECT count(*) FROM spooled) + (SELECT count(*) FROM spooled_votes)"
        ).fetchone()
        if count >= self.limit:
            raise SpoolError(f"the spool {self.path} is full ({self.limit} messages and votes)")

    def votes_waiting(self) -> int:
        """How many votes are kept (from memory after the first call)."""
        if self._votes is None:
            self._votes = len(self.pending_votes())
        return self._votes

    def pending_votes(self) -> list[SpooledVote]:
        """Every kept vote, in the order they were cast."""
        rows = self._rows("SELECT seq, received_at, vote FROM spooled_votes ORDER BY seq")
        self._votes = len(rows)  # another process (`forget`) may have deleted some
        return [
            SpooledVote(seq, FeedbackEvent(**json.loads(body)), datetime.fromisoformat(when))
            for seq, when, body in rows
        ]

    def vote_done(self, kept: SpooledVote) -> None:
        """Forget a vote once the store has it."""
        if self._delete("DELETE FROM spooled_votes WHERE seq = ?", kept.seq) and self._votes:
            self._votes -= 1

    def holds(self, where: ThreadKey) -> bool:
        """Whether messages of this thread are kept (read from memory, no file access)."""
        return where in self._by_thread()

    def _by_thread(self) -> Counter[ThreadKey]:
        if self._threads is None:
            self._threads = Counter(entry.message.where for entry in self.pending())
        return self._threads

    def pending(self) -> list[Spooled]:
        """Every kept message, in the order they arrived."""
        rows = self._rows("SELECT key, received_at, message FROM spooled ORDER BY seq")
        return [
            Spooled(key, _decode(json.loads(body)), datetime.fromisoformat(when))
            for key, when, body in rows
        ]

    def __len__(self) -> int:
        rows = self._rows("SELECT count(*) FROM spooled")
        return int(rows[0][0]) if rows else 0

    def done(self, entry: Spooled) -> None:
        """Forget a message once the store holds it."""
        deleted = self._delete("DELETE FROM spooled WHERE key = ?", entry.key)
        threads = self._by_thread()
        if deleted and threads[entry.message.where] > 0:
            threads[entry.message.where] -= 1
            if not threads[entry.message.where]:
                del threads[entry.message.where]

    def oldest(self) -> datetime | None:
        """When the oldest kept message or vote arrived (None when nothing is kept)."""
        rows = self._rows(
            "SELECT min(received_at) FROM (SELECT received_at FROM spooled"
            " UNION ALL SELECT received_at FROM spooled_votes)"
        )
        return datetime.fromisoformat(rows[0][0]) if rows and rows[0][0] else None

    def set_aside(self, kept: Spooled | SpooledVote) -> None:
        """Move a kept message or vote the store keeps refusing out of the way of the others,
        into the file's ``set_aside`` table (for an operator to look at; `forget` reaches it)."""
        conn = self._open(create=False)
        if conn is None:
            return
        if isinstance(kept, Spooled):
            kind, body = "message", json.dumps(_encode(kept.message))
            drop: tuple[str, object] = ("DELETE FROM spooled WHERE key = ?", kept.key)
        else:
            kind, body = "vote", json.dumps(dataclasses.asdict(kept.vote))
            drop = ("DELETE FROM spooled_votes WHERE seq = ?", kept.seq)
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            if conn.execute(drop[0], (drop[1],)).rowcount:  # not stored or forgotten meanwhile
                conn.execute(
                    "INSERT INTO set_aside (kind, received_at, body) VALUES (?, ?, ?)",
                    (kind, kept.received_at.isoformat(), body),
                )
        self._recount()

    def forget_user(self, platform: str, user: str, *, dry_run: bool = False) -> int:
        """Delete every kept and set-aside message and vote of one person (or, in a dry run,
        count them); how many. Another process holding the spool finds them gone."""
        conn = self._open(create=False)
        if conn is None:
            return 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            deleted = sum(conn.execute(sql, (user, platform)).rowcount for sql in _FORGET)
            conn.execute("ROLLBACK" if dry_run else "COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise SpoolError(f"cannot forget in the spool {self.path}: {exc}") from exc
        self._recount()
        return deleted

    def _recount(self) -> None:
        """Count the kept messages and votes from the file again when next asked."""
        self._threads = self._votes = None

    def _rows(self, query: str) -> list[Any]:
        conn = self._open(create=False)
        return [] if conn is None else conn.execute(query).fetchall()

    def _delete(self, statement: str, key: object) -> bool:
        conn = self._open(create=False)
        if conn is None:
            return False
        with conn:
            return conn.execute(statement, (key,)).rowcount > 0

    def close(self) -> None:
        """Close the file."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _Body(TypedDict):
    where: list[str]
    user: str
    text: str
    message_id: str
    dedupe_keys: list[str]
    attachments: int


def _encode(message: ChatMessage) -> _Body:
    where = message.where
    return {
        "where": [where.platform, where.workspace, where.channel, where.thread, where.parent],
        "user": message.user,
        "text": message.text,
        "message_id": message.message_id,
        "dedupe_keys": list(message.dedupe_keys),
        "attachments": message.attachments,
    }


def _decode(body: _Body) -> ChatMessage:
    return ChatMessage(
        ThreadKey(*body["where"]),  # spools written before 0008 hold no parent
        body["user"],
        body["text"],
        body["message_id"],
        tuple(body["dedupe_keys"]),
        body["attachments"],
    )


__all__ = ["Spool", "SpoolError", "Spooled", "SpooledVote"]
