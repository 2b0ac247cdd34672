"""Which Slack users are bots: Slack's reaction events do not say, and another bot's 👍 is not a
person's feedback, so it must not become training data."""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

#: Users remembered at most; past it the memory starts again (a workspace's voters are few).
KNOWN_LIMIT = 10_000


class SlackUsers:
    """Asks ``users.info`` once per user whether they are a bot (or an app's bot user).

    When Slack cannot say (the ``users:read`` scope is missing, or the call fails), the user
    counts as a person: losing every vote of an install that lacks the scope would be worse than
    counting the rare vote of another bot. A missing scope is logged once and not asked again.
    """

    def __init__(self, client: AsyncWebClient, limit: int = KNOWN_LIMIT) -> None:
        self._client = client
        self._limit = limit
        self._known: dict[str, bool] = {}
        self._can_ask = True

    async def is_bot(self, user: str) -> bool:
        """Whether ``user`` is a bot, as far as Slack tells."""
        known = self._known.get(user)
        if known is not None or not self._can_ask:
            return bool(known)
        try:
            response = await self._client.users_info(user=user)
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error == "missing_scope":
                self._can_ask = False
                log.warning(
                    "the Slack app lacks the users:read scope, so reactions by other bots count "
                    "as votes: add it (slack-app-manifest.yaml has it) and reinstall the app"
                )
            else:
                log.info("users.info %s failed (%s): its reaction counts as a vote", user, error)
            return False
        profile = response.get("user") or {}
        bot = bool(profile.get("is_bot"))
        if len(self._known) >= self._limit:
            self._known.clear()
        self._known[user] = bot
        return bot


__all__ = ["KNOWN_LIMIT", "SlackUsers"]
