"""What the log and the operator's screens may show: no message text, no token, no password.

Two pieces, used wherever the bot prints something an operator reads:

- `mask_urls` masks the ``user:password@`` part of every URL in a text (log lines, /healthz,
  CLI errors). It is a regular expression over free text rather than SQLAlchemy's URL parser
  (``store.database.safe_url``, which takes one whole URL): a log line holds URLs among words.
- `LogSafety`, a `logging.Filter` installed on the handlers that `cli/logs.setup_logging`
  creates, so it sees every record of every library: it replaces the lines known to carry a
  request body (slack_bolt prints the whole body of a request whose signature fails) and masks
  credentials in URLs in every other line. It cannot recognise message text in an arbitrary
  line: keeping text out of messages (and ``hide_parameters`` on the SQL engines) does that.
"""

from __future__ import annotations

import logging
import re

#: ``scheme://user:password@`` or ``scheme://token@``: everything between ``//`` and ``@``.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/@?#]+)@")

#: slack_bolt's request verification: "Invalid request signature detected (signature: …,
#: timestamp: …, body: <the whole request>)".
_BODY_LINES = ("Invalid request signature detected",)
WITHHELD = "(signature, timestamp and body withheld by koalabot)"
_FORMATTER = logging.Formatter()


def _mask(match: re.Match[str]) -> str:
    user, colon, _password = match.group("userinfo").partition(":")
    # A lone user name may itself be a token (https://TOKEN@host), so it is masked too.
    shown = f"{user}:***" if colon else "***"
    return f"{match.group('scheme')}{shown}@"


def mask_urls(text: str) -> str:
    """``text`` with the credentials of every URL in it masked."""
    return _USERINFO.sub(_mask, text) if "@" in text else text


class LogSafety(logging.Filter):
    """Rewrites records in place: body-carrying library lines replaced, URL credentials masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for start in _BODY_LINES:
            if message.startswith(start):
                message = f"{start} {WITHHELD}"
                break
        record.msg, record.args = mask_urls(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_urls(_FORMATTER.formatException(record.exc_info))
        return True


def install(handler: logging.Handler | None) -> None:
    """Put `LogSafety` on ``handler`` (once). Commands that configure no logging print warnings
    through ``logging.lastResort``: the CLI installs it there too."""
    if handler is not None and not any(isinstance(f, LogSafety) for f in handler.filters):
        handler.addFilter(LogSafety())


__all__ = ["WITHHELD", "LogSafety", "install", "mask_urls"]
