"""What a reviewer can decide about an answer on the review page, as plain values: the export
applies them without loading the review page's SQL."""

from __future__ import annotations

from enum import StrEnum


class Decision(StrEnum):
    """What a reviewer can decide about an answer."""

    INCLUDE = "include"
    EXCLUDE = "exclude"
    CORRECT = "correct"


#: Why an answer is excluded (stored value → what the page shows).
REASONS: dict[str, str] = {
    "wrong": "wrong",
    "unsafe": "unsafe",
    "private": "private",
    "low_quality": "low quality",
    "off_topic": "off-topic",
}

#: Exclusion reasons whose text must not reach training data even as an earlier turn.
WITHHELD_REASONS = frozenset({"unsafe", "private"})

__all__ = ["REASONS", "WITHHELD_REASONS", "Decision"]
