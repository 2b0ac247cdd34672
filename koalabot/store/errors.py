"""A database failure as the user sees it: one line, the driver's first, never a traceback."""

from __future__ import annotations

from koalabot.errors import StoreError


def store_error(exc: BaseException) -> StoreError:
    """The StoreError for a failed statement (SQLAlchemy wraps the driver's error in ``orig``)."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return StoreError(f"database error: {reason[0] if reason else type(exc).__name__}")


__all__ = ["store_error"]
