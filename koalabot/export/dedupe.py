"""Dedupe at the user-query level, as Koala's data pipeline did with ShareGPT: one answer per
question, so a question asked a hundred times does not weigh a hundred times in training.

A question is the user side of a thread up to the answer: for a single-turn thread, its one user
message; for a follow-up, every user message before it too, so "thanks" or "go on" only repeats
another when the conversation before it repeats as well.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

_NOT_WORD = re.compile(r"[\W_]+")


def normalise(text: str) -> str:
    """Text as a question compares: Unicode-normalised (NFKC), case-folded, every run of
    punctuation and white space one space, trimmed. "What is a koala?" == "what is a  KOALA"."""
    return _NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def question_key(user_messages: Iterable[str]) -> int:
    """A 64-bit digest of the normalised user messages, in order: memory per question stays
    small and constant however long the thread (a collision among a million questions has odds
    of about one in thirty million)."""
    digest = hashlib.blake2b(digest_size=8)
    for text in user_messages:
        digest.update(normalise(text).encode())
        digest.update(b"\0")
    return int.from_bytes(digest.digest())


class Deduper:
    """Remembers the questions already answered in this export; the first message asking one
    wins, and every answer to that message stays (regenerations, dpo pairs).

    Exports read one conversation at a time, and a message lives in one conversation: only the
    current conversation's owners are kept, beside one set of every question seen.
    """

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self._owners: dict[int, int] = {}

    def new_conversation(self) -> None:
        """Forget which messages of the previous conversation owned their questions."""
        self._owners.clear()

    def keep(self, key: int, message_id: int) -> bool:
        """Whether an answer to user message ``message_id``, whose question is ``key``, stays."""
        owner = self._owners.get(key)
        if owner is not None:
            return owner == message_id
        if key in self._seen:
            return False
        self._seen.add(key)
        self._owners[key] = message_id
        return True


__all__ = ["Deduper", "normalise", "question_key"]
