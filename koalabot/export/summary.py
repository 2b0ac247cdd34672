"""What an export tells the person running it: a progress line while it runs (on a terminal
only) and, at the end, rows written and every voted answer left out, counted by reason.

Counts, not lists: a summary of a million votes stays a few lines, and the reasons say which
option to change (each names its flag where one applies).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from koalabot.export.options import ExportOptions
from koalabot.export.redact import Kind


@dataclass
class Summary:
    """What an export wrote and what it left out, by reason (printed on stderr)."""

    format: str
    rows: int = 0
    threads: int = 0
    voted_answers: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    #: What redaction replaced, by kind (each message counted once).
    redacted: Counter[Kind] = field(default_factory=Counter)

    def skip(self, reason: str) -> None:
        """Count one voted answer (or, for dpo, one answer without a pair) left out."""
        self.skipped[reason] += 1

    def add(self, later: Summary) -> None:
        """Count in the summary of the conversations that came after these (skip reasons keep
        the order they first appeared in, which breaks ties in the printed summary)."""
        self.rows += later.rows
        self.threads += later.threads
        self.voted_answers += later.voted_answers
        self.skipped.update(later.skipped)
        self.redacted.update(later.redacted)

    def lines(self) -> list[str]:
        """The human summary: rows written, then rows skipped by reason, most frequent first."""
        lines = [
            f"wrote {_count(self.rows, self.format + ' row')} from "
            f"{_count(self.voted_answers, 'voted answer')} in "
            f"{_count(self.threads, 'conversation')}"
        ]
        total = sum(self.skipped.values())
        if total:
            lines.append(f"skipped {total:,}:")
            lines += [f"  {n:>9,}  {reason}" for reason, n in self.skipped.most_common()]
        else:
            lines.append("skipped 0")
        found = [(kind, self.redacted[kind]) for kind in _REDACTED_NOUNS if self.redacted[kind]]
        if found:
            lines.append(
                "redacted " + ", ".join(_count(n, _REDACTED_NOUNS[kind]) for kind, n in found)
            )
        return lines


_REDACTED_NOUNS = {
    Kind.EMAIL: "e-mail address",
    Kind.PHONE: "phone number",
    Kind.URL: "secret URL",
    Kind.API_KEY: "API key",
}


def _count(n: int, noun: str) -> str:
    if n == 1:
        return f"{n:,} {noun}"
    return f"{n:,} {noun}es" if noun.endswith("ss") else f"{n:,} {noun}s"


class Progress:
    """A one-line progress display on a terminal (nothing when the stream is not a tty)."""

    def __init__(self, stream: TextIO | None, total: int, interval: float = 0.2) -> None:
        self.stream = stream if stream is not None and stream.isatty() else None
        self.total = total
        self.interval = interval
        self._started = time.monotonic()
        self._shown = self._started - interval  # draw on the first update

    def update(self, threads: int, rows: int) -> None:
        """Redraw at most every ``interval`` seconds."""
        if self.stream is None:
            return
        now = time.monotonic()
        if now - self._shown < self.interval:
            return
        self._shown = now
        share = f" ({100 * threads / self.total:.0f}%)" if self.total else ""
        rate = rows / max(now - self._started, 1e-9)
        self.stream.write(
            f"\rexporting: {threads:,}/{self.total:,} conversations{share}, "
            f"{rows:,} rows, {rate:,.0f} rows/s "
        )
        self.stream.flush()

    def close(self) -> None:
        """Erase the line so the summary starts clean."""
        if self.stream is not None:
            self.stream.write("\r\033[K")
            self.stream.flush()


def print_summary(summary: Summary, options: ExportOptions, target: str, err: TextIO) -> None:
    """The summary on stderr, with where the rows went and how ids were written."""
    lines = summary.lines()
    lines[0] += f" to {target}"
    ids = (
        "user ids pseudonymised (HMAC-SHA256 keyed by KOALABOT_PSEUDONYM_SECRET)"
        if options.pseudonym_secret
        else "user ids written raw (--no-pseudonymize)"
    )
    lines.append(ids)
    if not options.redact:
        lines.append("text written as stored, nothing redacted (--no-redact)")
    err.write("".join(f"koalabot export: {line}\n" for line in lines))


__all__ = ["Progress", "Summary", "print_summary"]
