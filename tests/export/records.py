"""Threads built by hand, as the store hands them to the export (plain records, no database), for
the unit tests of the export's pure pieces (view, rows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from koalabot.store.threads import Thread, ThreadMessage

WHEN = "2024-01-01 12:00:00.000000"  # SQLite's stored form, as the export reads it


@dataclass
class Build:
    """A conversation written message by message; ids grow as they would in the store."""

    platform: str = "slack"
    messages: list[ThreadMessage] = field(default_factory=list)

    def ask(self, text: str, author: str = "U1") -> ThreadMessage:
        return self._add(role="user", author=author, text=text, parent_id=None)

    def answer(self, question: ThreadMessage, text: str, **votes_and_more: Any) -> ThreadMessage:
        return self._add(
            role="assistant", author=None, text=text, parent_id=question.id, **votes_and_more
        )

    def thread(self) -> Thread:
        return Thread(1, self.platform, list(self.messages))

    def _add(self, **fields: Any) -> ThreadMessage:
        message = ThreadMessage(
            conversation_id=1,
            platform=self.platform,
            id=len(self.messages) + 1,
            status=fields.pop("status", "ok"),
            created_at=WHEN,
            **fields,
        )
        self.messages.append(message)
        return message
