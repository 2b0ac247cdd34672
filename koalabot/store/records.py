"""The plain records the repository hands out: no SQLAlchemy, nothing to close.

The engine and the prompt stage see stored messages, pages of a thread and answers only through
these frozen dataclasses (and one NamedTuple, for speed), so they never import the store's SQL.
See docs/concepts.md for the words used here (thread, answer, generation, vote).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from koalabot.events import ThreadKey


class StoredMessage(NamedTuple):
    """A message as the prompt builder needs it (a tuple: hundreds are read per answer)."""

    id: int
    role: str
    text: str
    parent_id: int | None
    status: str
    side: str | None = None  # "A" or "B": an answer of a side-by-side battle


@dataclass(frozen=True)
class Page:
    """Some of a thread's messages, newest first, and how many are older still."""

    messages: list[StoredMessage]
    older: int


@dataclass(frozen=True)
class AnswerStart:
    """A new answer's row, whether it is its thread's first, and the thread's newest
    messages when they were asked for."""

    answer_id: int
    first: bool
    tail: Page | None


@dataclass(frozen=True)
class AnswerInfo:
    """What the engine needs to regenerate or vote on an answer."""

    id: int
    conversation_id: int
    parent_id: int | None
    role: str
    where: ThreadKey
    model: str | None = None  # the model that made it
    side: str | None = None  # "A" or "B": an answer of a side-by-side battle


@dataclass(frozen=True)
class Orphan:
    """An answer a crashed process left `streaming` (now `interrupted`), and where it shows."""

    answer_id: int
    where: ThreadKey
    platform_message_id: str | None  # its placeholder, if it was posted


@dataclass(frozen=True)
class GenerationRecord:
    """How one answer was produced (stored with it; training data is rebuilt from this)."""

    prompt: str
    template: str
    parameters: dict[str, Any]
    model_id: str | None = None
    endpoint: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    time_to_first_token: float | None = None
    total_time: float | None = None
    dropped_turns: int = 0
    error: str | None = None


__all__ = ["AnswerInfo", "AnswerStart", "GenerationRecord", "Orphan", "Page", "StoredMessage"]
