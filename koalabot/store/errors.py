"""A database failure as the user sees it: one line, the driver's first, never a traceback; and
which failures mean "unreachable" (keep the work for later) and which mean "refused" (do not).

The split errs towards "unreachable": only errors that say the statement itself is at fault
(the DB-API's DataError, IntegrityError, ProgrammingError, NotSupportedError; a PostgreSQL
SQLSTATE of such a class; a driver that cannot encode a value: a ValueError or OverflowError
anywhere in the chain) count as refused. Anything else,
including asyncpg's generic errors without a SQLSTATE, is taken as the connection's fault; a
kept item that then keeps failing is set aside by the backlog rather than retried forever.
"""

from __future__ import annotations

from sqlalchemy.exc import (
    DataError,
    IntegrityError,
    NotSupportedError,
    ProgrammingError,
)

from koalabot.errors import StoreError, StoreRefusedError

#: SQLSTATE classes that blame the statement: data exception, integrity constraint, syntax or
#: access rule, feature not supported.
_REFUSED_SQLSTATE_CLASSES = frozenset({"22", "23", "42", "0A"})
_REFUSED_ERRORS = (DataError, IntegrityError, ProgrammingError, NotSupportedError)


def store_error(exc: BaseException) -> StoreError:
    """The StoreError for a failed statement (SQLAlchemy wraps the driver's error in ``orig``)."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return StoreError(f"database error: {reason[0] if reason else type(exc).__name__}")


def refused(exc: BaseException) -> bool:
    """Whether the database (or its driver) refused the statement itself, rather than being
    unreachable: the same write would fail again."""
    if getattr(exc, "connection_invalidated", False):
        return False
    if isinstance(exc, _REFUSED_ERRORS) or any(map(_unencodable, _chain(exc))):
        return True
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in _REFUSED_SQLSTATE_CLASSES


def _unencodable(exc: BaseException) -> bool:
    """A value the driver cannot send (a lone surrogate, an integer out of range): raised by
    sqlite3 as is, by asyncpg as a ValueError that SQLAlchemy wraps."""
    return isinstance(exc, ValueError | OverflowError)


def _chain(exc: BaseException | None) -> list[BaseException]:
    """An error, the driver's error SQLAlchemy wraps, and what caused each."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 8:
        seen.append(exc)
        exc = getattr(exc, "orig", None) or exc.__cause__
    return seen


def failure(exc: BaseException) -> StoreError:
    """The StoreError for a failed write or read: refused (not worth keeping) or unreachable.
    Neither message carries the driver's text, which can hold the statement's parameters."""
    return StoreRefusedError() if refused(exc) else StoreError()


__all__ = ["failure", "refused", "store_error"]
