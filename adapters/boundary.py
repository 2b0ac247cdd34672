"""The adapters' error boundary: a failure while handling one platform event ends here.

Whatever escapes the engine (or the adapter's own routing, such as asking the store whether
the bot is in a thread) becomes one log line and, where the adapter can reach the person, a
short notice in plain words. The log line names the error class and, for an unexpected one,
where it was raised — never the exception's text, which may quote a message or a SQL parameter,
and never a traceback (the privacy rule: no message text in the log at any level). The trade-off
is a terser log for bugs; the file and line are what a developer needs to start.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable

from koalabot.errors import KoalabotError

log = logging.getLogger(__name__)

#: Posts a short notice to the person whose event failed.
Tell = Callable[[str], Awaitable[object]]


@contextlib.asynccontextmanager
async def boundary(what: str, tell: Tell | None = None) -> AsyncIterator[None]:
    """Run the block; an exception from it is logged as one line and told through ``tell``."""
    try:
        yield
    except KoalabotError as exc:
        log.warning("%s failed: %s", what, exc.__class__.__name__)
        await _tell(tell, exc.user_message)
    except Exception as exc:
        log.error("%s failed unexpectedly: %s", what, describe(exc))
        await _tell(tell, KoalabotError.user_message)


def describe(exc: BaseException) -> str:
    """The error's class and where it was raised (``file:line in function``), not its text."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return exc.__class__.__name__
    last = frames[-1]
    return f"{exc.__class__.__name__} at {last.filename}:{last.lineno} in {last.name}"


async def _tell(tell: Tell | None, text: str) -> None:
    if tell is None:
        return
    try:
        await tell(text)
    except Exception as exc:
        log.warning("could not post a notice: %s", exc.__class__.__name__)
