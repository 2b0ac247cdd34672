"""Pseudonyms: user and conversation ids in exported rows, and user mentions inside their text,
replaced by a keyed hash, so rows made with one key link up and nobody without it links them back.

Hand-written on the standard library's HMAC rather than a library: the whole job is one keyed
hash, and an export computes one per conversation and per user, so it caches users' pseudonyms
and copies the keyed state instead of setting the key up again.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

from koalabot.store.threads import Thread

# User mentions inside message text: Slack <@U123> / <@W123|name>, Discord <@123> / <@!123>.
_MENTION = re.compile(r"<@!?([UW][A-Z0-9]+|\d+)(?:\|[^>]*)?>")
_CACHE_LIMIT = 100_000


class Pseudonymizer:
    """Stable, irreversible ids: HMAC-SHA256 with a secret key, so the same user gets the same
    pseudonym in every export made with that key and nobody without it can link one back.

    Without a key (``--no-pseudonymize``) the raw ``platform:id`` is written instead.
    """

    def __init__(self, secret: str | None) -> None:
        self._key = secret.encode() if secret is not None else None
        mac = hmac.new(self._key, digestmod=hashlib.sha256) if self._key else None
        # CPython's OpenSSL HMAC sits behind a Python wrapper that doubles what a copy costs, and
        # an export hashes every conversation: use the object underneath where there is one.
        self._hmac: Any = getattr(mac, "_hmac", None) or mac
        #: Pseudonyms already computed, by platform then user id (the same users vote often).
        self._users: dict[str, dict[str, str]] = {}
        self._cached = 0

    def _hash(self, prefix: str, value: str) -> str:
        assert self._hmac is not None
        mac = self._hmac.copy()  # the keyed state, without setting the key up again
        mac.update(value.encode())
        digest: str = mac.hexdigest()
        return prefix + digest[:20]

    def user(self, platform: str, user_id: str) -> str:
        """The pseudonym of a platform user (``u_`` + 80 bits of HMAC)."""
        if self._key is None:
            return f"{platform}:{user_id}"
        users = self._users.get(platform)
        if users is None:
            users = self._users[platform] = {}
        found = users.get(user_id)
        if found is None:
            if self._cached >= _CACHE_LIMIT:
                self._users.clear()
                self._cached = 0
                users = self._users[platform] = {}
            found = users[user_id] = self._hash("u_", f"user\0{platform}\0{user_id}")
            self._cached += 1
        return found

    def conversation(self, thread: Thread) -> str:
        """The pseudonym of a conversation (its id in the store, hashed)."""
        if self._key is None:
            return str(thread.id)
        return self._hash("c_", f"conversation\0{thread.id}")

    def text(self, platform: str, text: str) -> str:
        """Message text with every user mention replaced by the user's pseudonym."""
        if self._key is None or "<@" not in text:
            return text
        return _MENTION.sub(lambda m: f"<@{self.user(platform, m.group(1))}>", text)


__all__ = ["Pseudonymizer"]
