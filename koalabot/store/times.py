"""Times as the store hands them back (PostgreSQL: aware datetimes; SQLite: naive UTC, or its
stored text when read raw) turned into aware UTC datetimes and ISO 8601 strings.

Apart from the SQL, so the compiled build (setup.py) can compile it: an export formats a time
for every row it writes.
"""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(value: datetime | str) -> datetime:
    """A stored time as an aware UTC datetime (SQLite gives naive UTC, or text when read raw)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso_utc(value: datetime | str) -> str:
    """A stored time in ISO 8601 with its UTC offset."""
    if isinstance(value, str) and len(value) == 26 and value[10] == " ":
        # SQLite's stored form, "YYYY-MM-DD HH:MM:SS.ffffff": rewritten as isoformat() would.
        fraction = "" if value.endswith(".000000") else value[19:]
        return f"{value[:10]}T{value[11:19]}{fraction}+00:00"
    return as_utc(value).isoformat()


__all__ = ["as_utc", "iso_utc"]
