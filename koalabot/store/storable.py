"""Text made storable before it is written: the code points a database refuses are replaced.

PostgreSQL's text type cannot hold NUL (U+0000), and no UTF-8 database (nor SQLite's driver) can
encode a lone UTF-16 surrogate (U+D800..U+DFFF without its pair), which a JSON payload such as
Slack's can carry as ``"\\ud83d"``. Inserting either fails the statement, and the message would
be lost or taken for an outage. Each becomes U+FFFD (the replacement character), which shows
that something unreadable was there; a surrogate *pair* becomes the character it encodes; every
other character is kept, so the person's visible text is unchanged.

Hand-written (a regular expression and the codec's own "replace"), as no library does just this;
text without either (nearly all of it) is returned as it came, after one regex search.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: What a database refuses in text: NUL and any surrogate (paired ones are joined first).
_REFUSED = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\N{REPLACEMENT CHARACTER}"


def storable(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD, surrogate pairs joined."""
    if _REFUSED.search(text) is None:
        return text
    # UTF-16 round trip: "surrogatepass" lets pairs through to be joined on the way back, and
    # "replace" turns each one left alone into U+FFFD.
    joined = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return joined.replace("\x00", REPLACEMENT)


def storable_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row to insert with each of its text values made storable."""
    return {k: storable(v) if isinstance(v, str) else v for k, v in row.items()}


__all__ = ["REPLACEMENT", "storable", "storable_row"]
