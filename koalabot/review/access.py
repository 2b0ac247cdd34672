"""Who may open the review page, and from where: the token, the browser's session, the Host.

The review token is long-lived (an operator may keep it in KOALABOT_REVIEW_TOKEN), so it never
becomes a cookie. Given once as ``?token=`` (or on every request as ``Authorization: Bearer``),
it buys a session value: a nonce and its HMAC under a secret that lives only in this process's
memory, bound to the origin the page is served on. The session dies with ``koalabot review``
and is refused on any other origin. The cookie is HttpOnly, SameSite=Strict and host-only.

Cookies are not separated by port, so any server on the same host name receives them. The page
therefore serves on a loopback address of its own (a random 127.x.y.z; Linux routes all of
127.0.0.0/8 to the loopback interface) where no other server listens, and refuses requests whose
Host header names anything but the address it serves (DNS rebinding). What cannot be closed
without TLS is in the README ("Review page: limits").
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import string
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from urllib.parse import urlsplit

from aiohttp import web

from koalabot.errors import ConfigError

COOKIE = "koalabot_review"
MIN_TOKEN_BITS = 128
_MIN_DISTINCT = 8

# The smallest alphabet a token's characters fit in sets the bits each character is worth:
# secrets.token_hex → 4, token_urlsafe → 6, arbitrary printable ASCII → log2(94).
_ALPHABETS = tuple(
    frozenset(chars)
    for chars in (
        string.digits,
        "0123456789abcdef",
        "0123456789ABCDEF",
        string.ascii_lowercase,
        string.ascii_uppercase,
        string.ascii_lowercase + string.digits,
        string.ascii_uppercase + string.digits,
        string.ascii_letters + string.digits + "-_",
        string.ascii_letters + string.digits + string.punctuation,
    )
)
_LOOPBACK_NAMES = ("localhost",)


# --- the token ---------------------------------------------------------------------------------


def token_bits(token: str) -> float:
    """An upper bound of the token's strength: its length (of one period, if it repeats)
    times the bits of its alphabet.

    Hand-written: strength estimators (zxcvbn) judge passwords people remember; a review token
    is a random string, and this bound refuses what is short, repeated or drawn from few
    characters. It cannot tell dictionary words from random letters: a long passphrase passes.
    """
    used = frozenset(token)
    if len(used) < _MIN_DISTINCT:  # "aaaa…", "abab…": not random whatever their length
        return 0.0
    size = next((len(a) for a in _ALPHABETS if used <= a), max(94, len(used)))
    return _period(token) * math.log2(size)


def _period(token: str) -> int:
    """The length of the shortest stretch the token repeats ("abc1abc1abc1" → 4)."""
    return next(p for p in range(1, len(token) + 1) if token[p:] == token[:-p] or p == len(token))


def review_token(configured: str | None) -> tuple[str, bool]:
    """The token to use and whether it was made here (so it must be printed).

    Empty or unset: a new one. Weaker than 128 bits: refused with a ConfigError.
    """
    if not configured:
        return secrets.token_urlsafe(32), True
    if token_bits(configured) < MIN_TOKEN_BITS:
        raise ConfigError(
            "KOALABOT_REVIEW_TOKEN is too weak (under 128 bits): use at least 22 random "
            "characters, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))', "
            "or leave it empty and koalabot review makes one"
        )
    return configured, False


# --- where to serve ----------------------------------------------------------------------------


def own_loopback() -> str:
    """A random loopback address no other server is likely to use (127.0.0.1 off Linux, where
    only that address is configured on the loopback interface)."""
    if not sys.platform.startswith("linux"):
        return "127.0.0.1"
    return "127.{}.{}.{}".format(*(1 + secrets.randbelow(254) for _ in range(3)))


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def served_hosts(request: web.Request) -> frozenset[str]:
    """The Host values that name the address this connection came in on."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not sockname:
        return frozenset()
    host, port = str(sockname[0]), int(sockname[1])
    names = {host}
    if host in ("127.0.0.1", "::1"):  # what "localhost" resolves to
        names.update(_LOOPBACK_NAMES)
    hosts = {_host_port(name, port) for name in names}
    if port == 80:
        hosts |= {f"[{n}]" if ":" in n else n for n in names}
    return frozenset(hosts)


# --- the session -------------------------------------------------------------------------------


class Sessions:
    """Session values for one process: a random nonce and its MAC over the origin."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)  # never written anywhere

    def _mac(self, nonce: str, origin: str) -> str:
        message = f"{nonce}\n{origin}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def issue(self, origin: str) -> str:
        """A new session value, good on ``origin`` only."""
        nonce = secrets.token_urlsafe(16)
        return f"{nonce}.{self._mac(nonce, origin)}"

    def valid(self, value: str | None, origin: str) -> bool:
        """Whether ``value`` was issued by this process for ``origin``."""
        nonce, dot, mac = (value or "").partition(".")
        if not (dot and nonce.isascii() and mac.isascii()):
            return False
        return hmac.compare_digest(mac, self._mac(nonce, origin))


# --- the guard ---------------------------------------------------------------------------------


class Gate:
    """What the guard needs: the token, this process's sessions, and the 401 page."""

    def __init__(self, token: str, unauthorized: Callable[[], str]) -> None:
        self.token = token
        self.sessions = Sessions()
        self.unauthorized = unauthorized

    def token_ok(self, given: str | None) -> bool:
        """Whether ``given`` is the review token (in constant time)."""
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())


GATE_KEY = web.AppKey("review_gate", Gate)


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value if scheme.lower() == "bearer" else None


def _signed_in(request: web.Request) -> web.Response:
    """303 to the same address without ``token=``, with a new session cookie."""
    query = [(k, v) for k, v in request.query.items() if k != "token"]
    clean = request.rel_url.with_query(query)
    gate = request.app[GATE_KEY]
    response = web.Response(status=303, headers={"Location": str(clean)})
    value = gate.sessions.issue(_origin(request))
    response.set_cookie(COOKIE, value, httponly=True, samesite="Strict", path="/")
    return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """421 for a Host this server does not serve; 401 without a token or session; 403 for a
    cross-site POST. ``?token=`` on a GET becomes a session cookie."""
    if request.host not in served_hosts(request):
        return web.Response(status=421, text="this page is served under another address")
    if request.path.startswith("/static/"):
        return await handler(request)
    gate = request.app[GATE_KEY]
    if request.method == "GET" and gate.token_ok(request.query.get("token")):
        return _signed_in(request)
    if not (
        gate.sessions.valid(request.cookies.get(COOKIE), _origin(request))
        or gate.token_ok(_bearer(request))
    ):
        return web.Response(status=401, text=gate.unauthorized(), content_type="text/html")
    if request.method == "POST" and request.headers.get("Origin", _origin(request)) != _origin(
        request
    ):
        return web.Response(status=403, text="cross-site request refused")
    return await handler(request)


# --- values from the address -------------------------------------------------------------------

_MAX_ID = 2**63 - 1


def row_id(text: str | None) -> int | None:
    """A row id from the address: ASCII digits that fit a 64-bit integer, else None."""
    if not text or not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    value = int(text)
    return value if value <= _MAX_ID else None


def day(text: str) -> datetime | None:
    """The UTC midnight of an ISO date, else None (a day after it must exist too)."""
    try:
        value = date.fromisoformat(text)
    except ValueError:
        return None
    if value >= date.max:
        return None
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def safe_next(target: str) -> str:
    """A path of this site to go back to after an action, else ``/``."""
    if (
        not target.startswith("/")
        or target.startswith("//")
        or not target.isprintable()
        or "\\" in target
        or not target.isascii()
    ):
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


__all__ = [
    "COOKIE",
    "GATE_KEY",
    "MIN_TOKEN_BITS",
    "Gate",
    "Sessions",
    "day",
    "guard",
    "own_loopback",
    "review_token",
    "row_id",
    "safe_next",
    "served_hosts",
    "token_bits",
]
