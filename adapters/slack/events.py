"""Slack payloads → koalabot events: pure functions, so the rules are visible in one place.

Events API shapes follow reference/slack-and-discord.md §1.1–1.2: ``message`` and
``app_mention`` carry ``channel``, ``user``, ``text``, ``ts`` and ``thread_ts`` in a thread;
reactions point at ``item.ts``; ``block_actions`` carry the button's ``value``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from koalabot.events import ChatMessage, FeedbackEvent, ThreadKey

PLATFORM = "slack"

#: Message subtypes a person produces; everything else (bot_message, message_changed,
#: message_deleted, channel_join...) is not something to answer.
HUMAN_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})

#: What a person sends the bot in a DM to opt out of training data (True) or back in (False).
CONSENT_WORDS = {"optout": True, "opt out": True, "optin": False, "opt in": False}

#: Reaction names (skin tones stripped) that count as votes.
VOTE_REACTIONS = {"+1": 1, "thumbsup": 1, "-1": -1, "thumbsdown": -1}


@dataclass(frozen=True)
class ButtonVote:
    """A click on one of the buttons under an answer."""

    answer_id: int
    user: str
    channel: str
    message_ts: str
    thread_ts: str


def is_human_post(event: dict[str, Any]) -> bool:
    """A new message written by a person (not a bot, not an edit or a deletion)."""
    return (
        event.get("subtype") in HUMAN_SUBTYPES
        and not event.get("bot_id")
        and bool(event.get("user"))
        and bool(event.get("ts"))
    )


def thread_ts_of(event: dict[str, Any]) -> str:
    """The thread a message belongs to: its ``thread_ts``, or its own ``ts`` for a root."""
    return str(event.get("thread_ts") or event["ts"])


def thread_key(body: dict[str, Any], event: dict[str, Any]) -> ThreadKey:
    """Where the conversation lives: (team, channel, thread_ts or ts)."""
    team = body.get("team_id") or event.get("team") or ""
    return ThreadKey(PLATFORM, str(team), str(event["channel"]), thread_ts_of(event))


def strip_mention(text: str, bot_user_id: str | None) -> str:
    """The text without the bot's ``<@U…>`` mention(s) and the whitespace around them."""
    if bot_user_id:
        text = re.sub(rf"\s*<@{re.escape(bot_user_id)}(?:\|[^>]*)?>\s*", " ", text)
    return text.strip()


def unescape(text: str) -> str:
    """Slack escapes ``&``, ``<`` and ``>`` in message text; the model should read them plain."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def chat_message(
    body: dict[str, Any], event: dict[str, Any], bot_user_id: str | None
) -> ChatMessage:
    """The engine's view of a person's post, with both keys Slack may deliver it under."""
    channel, ts = str(event["channel"]), str(event["ts"])
    keys = [f"slack:msg:{channel}:{ts}"]
    if body.get("event_id"):
        keys.insert(0, f"slack:ev:{body['event_id']}")
    return ChatMessage(
        where=thread_key(body, event),
        user=str(event["user"]),
        text=unescape(strip_mention(str(event.get("text") or ""), bot_user_id)),
        message_id=ts,
        dedupe_keys=tuple(keys),
        attachments=len(event.get("files") or ()),
    )


def consent_command(event: dict[str, Any]) -> bool | None:
    """True for ``optout`` sent in a DM, False for ``optin``; None for anything else."""
    if event.get("channel_type") != "im":
        return None
    words = " ".join(str(event.get("text") or "").lower().strip(" /.!").split())
    return CONSENT_WORDS.get(words)


def reaction_vote(event: dict[str, Any], bot_user_id: str | None) -> FeedbackEvent | None:
    """A thumbs reaction on one of the bot's messages as a vote; None for anything else."""
    name = str(event.get("reaction") or "").split("::", 1)[0]
    item = event.get("item") or {}
    rating = VOTE_REACTIONS.get(name)
    if rating is None or item.get("type") != "message" or not event.get("user"):
        return None
    if event.get("item_user") not in (None, bot_user_id):
        return None  # a reaction on someone else's message
    return FeedbackEvent(
        platform=PLATFORM,
        user=str(event["user"]),
        rating=rating,
        channel=str(item["channel"]),
        platform_message_id=str(item["ts"]),
        removed=event.get("type") == "reaction_removed",
        is_bot=event.get("user") == bot_user_id,
    )


def clicked_by(body: dict[str, Any]) -> tuple[str, str, str | None] | None:
    """(user, channel, thread) of a click on a button that names no answer; None if malformed."""
    container = body.get("container") or {}
    user = (body.get("user") or {}).get("id")
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    if not (user and channel):
        return None
    return str(user), str(channel), container.get("thread_ts") or container.get("message_ts")


def button_vote(body: dict[str, Any], action: dict[str, Any]) -> ButtonVote | None:
    """The answer, voter and thread of a click on a feedback button; None if malformed."""
    try:
        answer_id = int(action.get("value", ""))
    except ValueError:
        return None
    container = body.get("container") or {}
    message = body.get("message") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    message_ts = container.get("message_ts") or message.get("ts")
    user = (body.get("user") or {}).get("id")
    if not (channel and message_ts and user):
        return None
    thread = message.get("thread_ts") or container.get("thread_ts") or message_ts
    return ButtonVote(answer_id, str(user), str(channel), str(message_ts), str(thread))
