"""Who may use the bot, and how fast: checked before any model call, and before any vote.

Votes have a bucket of their own (the same number a minute as messages), so a person who votes a
lot is never kept from asking; a 🔄 asks the model, so it counts as a message.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from koalabot.config import Settings
from koalabot.errors import AccessDeniedError, RateLimitedError
from koalabot.events import ChatMessage, ThreadKey


class AccessPolicy:
    """Allow-lists (empty means everyone), a block-list, and a per-user messages-a-minute limit.

    The rate limit is kept in this process: with several replicas each enforces it for the
    messages it takes, which is generous by at most the number of replicas.
    """

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.workspaces = set(settings.allowed_workspaces)
        self.channels = set(settings.allowed_channels)
        self.users = set(settings.allowed_users)
        self.blocked = set(settings.blocked_users)
        self.per_minute = settings.rate_limit_per_minute
        self._clock = clock
        self._recent: dict[str, deque[float]] = {}

    def check_allowed(self, msg: ChatMessage) -> None:
        """Raise AccessDeniedError if policy keeps this user, channel or workspace out."""
        self.check_place(msg.where, msg.user)

    def check_place(self, where: ThreadKey, user: str) -> None:
        """Raise AccessDeniedError if policy keeps ``user`` out of the thread ``where``."""
        user_ids = {user, f"{where.platform}:{user}"}
        if user_ids & self.blocked:
            raise AccessDeniedError()
        if self.users and not user_ids & self.users:
            raise AccessDeniedError()
        if self.channels and not where.within(self.channels):
            raise AccessDeniedError()
        if self.workspaces and where.workspace and where.workspace not in self.workspaces:
            raise AccessDeniedError()

    def check_rate(self, platform: str, user: str, bucket: str = "") -> None:
        """Count one message (or one of ``bucket``: "votes") for the user; raise
        RateLimitedError beyond the limit a minute."""
        if self.per_minute <= 0:
            return
        now = self._clock()
        recent = self._recent.setdefault(f"{platform}:{user}:{bucket}", deque())
        while recent and now - recent[0] >= 60.0:
            recent.popleft()
        if len(recent) >= self.per_minute:
            raise RateLimitedError(self.per_minute, 60.0 - (now - recent[0]))
        recent.append(now)
