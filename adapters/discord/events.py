"""Discord gateway events → koalabot events: pure functions, so the rules are visible in one place.

A message's text loses the bot's mention (other mentions become @names, so the model reads
people by name); a conversation is keyed by guild ("" in DMs), channel and thread; a thumbs
reaction counts only on the bot's own messages and never by the bot itself.
"""

from __future__ import annotations

import re

import discord

from koalabot.events import ChatMessage, FeedbackEvent, ThreadKey

from .buttons import reaction_rating

PLATFORM = "discord"
THREAD_NAME_CHARS = 80

#: Message types a person writes; joins, pins, thread starters and the like are not questions.
ANSWERABLE = (discord.MessageType.default, discord.MessageType.reply)


def clean_text(message: discord.Message, bot_id: int) -> str:
    """The message text without the bot's mention; other mentions become @names."""
    names = {user.id: user.display_name for user in message.mentions}

    def replace(match: re.Match[str]) -> str:
        user_id = int(match[1])
        if user_id == bot_id:
            return ""  # with the space after it
        return f"@{names[user_id]}{match[2]}" if user_id in names else match[0]

    return re.sub(r"<@!?(\d+)>([ \t]?)", replace, message.content).strip()


def thread_name(text: str) -> str:
    """A thread title from the first line of the question."""
    line = next((line for line in text.splitlines() if line.strip()), "")
    first = " ".join(line.split())
    if len(first) > THREAD_NAME_CHARS:
        first = first[: THREAD_NAME_CHARS - 1].rstrip() + "…"
    return first or "Koala"


def thread_key(
    guild_id: int | None, channel_id: int, thread: int | str, parent: int | None = None
) -> ThreadKey:
    """Where a Discord conversation lives (guild "" for DMs; ``parent``: the channel a thread
    was opened from, which channel settings match too)."""
    return ThreadKey(PLATFORM, str(guild_id or ""), str(channel_id), str(thread), str(parent or ""))


def guild_of(message: discord.Message) -> int | None:
    """The guild a message was posted in; None in a DM."""
    if message.guild is not None:
        return message.guild.id
    guild_id: int | None = getattr(message.channel, "guild_id", None)
    return guild_id


def chat_message(message: discord.Message, where: ThreadKey, bot_id: int) -> ChatMessage:
    """The engine's view of a person's message, answered in ``where``."""
    return ChatMessage(
        where=where,
        user=str(message.author.id),
        text=clean_text(message, bot_id),
        message_id=str(message.id),
        dedupe_keys=(f"discord:msg:{message.id}",),
        attachments=len(message.attachments),
    )


def reaction_vote(
    payload: discord.RawReactionActionEvent, bot_id: int, *, removed: bool
) -> FeedbackEvent | None:
    """A thumbs reaction by someone else on one of the bot's messages; None for anything else.

    Whether the reacting user is another bot is the caller's to check (the payload may not say).
    """
    rating = reaction_rating(payload.emoji)
    if rating is None or payload.user_id == bot_id:
        return None
    if payload.message_author_id not in (None, bot_id):
        return None  # a reaction on someone else's message
    return FeedbackEvent(
        PLATFORM,
        str(payload.user_id),
        rating,
        channel=str(payload.channel_id),
        platform_message_id=str(payload.message_id),
        removed=removed,
    )
