"""What the review list is made of: plain records of rated answers, their context and votes,
the filters and the states an answer can be in. No SQL here, so the web app reads these freely.

Names (see docs/concepts.md): a *rated answer* is an assistant message somebody voted on; its
*context* is the thread up to it, as the model was shown it; its *generation summary* is how it
was produced, without the prompt string (the repository's GenerationRecord carries that).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from koalabot.store.models import Decision

#: Matches are counted up to this many ("10,000+"): an exact count would read every vote.
COUNT_LIMIT = 10_000


class State(StrEnum):
    """Review states the list can be filtered by."""

    UNREVIEWED = "unreviewed"
    REVIEWED = "reviewed"
    INCLUDED = "included"
    EXCLUDED = "excluded"
    CORRECTED = "corrected"


class Rating(StrEnum):
    """Net vote filters: more up than down, more down than up, or as many of each."""

    LIKED = "liked"
    DISLIKED = "disliked"
    SPLIT = "split"


@dataclass(frozen=True)
class Filters:
    """Which rated answers the list shows; None means any."""

    platform: str | None = None
    channel: str | None = None
    model: str | None = None
    rating: Rating | None = None
    since: datetime | None = None
    until: datetime | None = None  # exclusive
    state: State | None = None


@dataclass(frozen=True)
class ContextMessage:
    """One earlier message of the thread, as the rated answer's context."""

    id: int
    role: str
    author: str | None
    text: str
    created_at: datetime


@dataclass(frozen=True)
class Vote:
    """One person's thumbs on the answer."""

    user: str
    rating: int
    reason: str | None
    updated_at: datetime


@dataclass(frozen=True)
class GenerationSummary:
    """How the answer was produced."""

    template: str
    parameters: dict[str, Any]
    model_id: str | None
    endpoint: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    time_to_first_token: float | None
    total_time: float | None
    dropped_turns: int


@dataclass(frozen=True)
class ReviewRecord:
    """The decision stored for an answer: what, why, by whom and when."""

    decision: Decision
    reason: str | None
    correction: str | None
    reviewer: str
    decided_at: datetime


@dataclass
class RatedAnswer:
    """One rated answer as the review page shows it."""

    id: int
    platform: str
    workspace: str
    channel: str
    thread: str
    conversation_id: int
    parent_id: int | None
    status: str
    text: str
    created_at: datetime
    generation: GenerationSummary | None
    review: ReviewRecord | None
    votes: list[Vote] = field(default_factory=list)
    context: list[ContextMessage] = field(default_factory=list)

    @property
    def up(self) -> int:
        """Thumbs up."""
        return sum(1 for v in self.votes if v.rating > 0)

    @property
    def down(self) -> int:
        """Thumbs down."""
        return sum(1 for v in self.votes if v.rating < 0)


@dataclass(frozen=True)
class ReviewPage:
    """A page of the list, newest first, with cursors to the pages beside it (None: no more)."""

    items: list[RatedAnswer]
    #: How many answers match, counted up to ``count_limit`` + 1.
    total: int
    newer: int | None
    older: int | None
    count_limit: int = COUNT_LIMIT

    @property
    def total_text(self) -> str:
        """The count as the page shows it ("10,000+" past the limit)."""
        if self.total > self.count_limit:
            return f"{self.count_limit:,}+"
        return f"{self.total:,}"


@dataclass(frozen=True)
class Facets:
    """The values the filters offer."""

    platforms: list[str]
    channels: list[tuple[str, str]]  # (platform, channel)
    models: list[str]
