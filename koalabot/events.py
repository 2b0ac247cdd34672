"""What adapters hand to the engine, and what the engine hands back: plain data and one protocol.

Adapters turn platform events into these; the engine never sees a platform SDK object.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ThreadKey:
    """Where a conversation lives: unique per platform, workspace, channel and thread."""

    platform: str  # "slack", "discord", "terminal"
    workspace: str  # Slack team id, Discord guild id, "" for DMs and the terminal
    channel: str
    thread: str  # Slack thread_ts or root ts; Discord thread/DM channel id; terminal thread n
    #: The channel a platform thread was opened from, where that is not ``channel`` (a Discord
    #: thread is a channel of its own): stored with the thread, not part of its key.
    parent: str = field(default="", compare=False)

    def within(self, channels: Collection[str]) -> bool:
        """Whether the thread is in one of ``channels``, itself or by its parent channel."""
        return self.channel in channels or (self.parent != "" and self.parent in channels)


@dataclass(frozen=True)
class ChatMessage:
    """One human message meant for the bot, already stripped of the bot's mention."""

    where: ThreadKey
    user: str  # platform user id
    text: str
    message_id: str  # platform message id (Slack ts, Discord snowflake)
    #: Delivery ids to drop duplicates by (Slack event_id, "C123:ts", Discord message id...).
    dedupe_keys: tuple[str, ...] = ()
    attachments: int = 0  # files or images the message carried (the model reads text only)


@dataclass(frozen=True)
class Clicked:
    """The platform message a button was clicked on (Slack channel + ts, Discord channel +
    message id): a button counts only if that message shows the answer the button names."""

    channel: str
    message_id: str


@dataclass(frozen=True)
class FeedbackEvent:
    """A thumbs vote, from a button (answer_id known) or a reaction (platform message id).

    A button's vote carries the message it was clicked on in ``channel`` and
    ``platform_message_id`` too: without them it counts only on the terminal.
    """

    platform: str
    user: str
    rating: int  # +1 or -1; ignored when removed
    answer_id: int | None = None
    channel: str | None = None
    platform_message_id: str | None = None
    removed: bool = False
    is_bot: bool = False


@dataclass(frozen=True)
class FeedbackResult:
    """What happened to a vote, so the adapter can acknowledge it quietly."""

    recorded: bool
    answer_id: int | None = None
    rating: int = 0
    reason: str = ""
    #: The answer's thread, so an acknowledgement of a reaction can be shown there.
    where: ThreadKey | None = None
    #: The store was unreachable: the vote is kept (koalabot.store.spool) and recorded once it
    #: is back.
    kept: bool = False
    #: Why the vote was refused, in words only the voter should see ("" when it was not).
    notice: str = ""


@dataclass(frozen=True)
class AnswerResult:
    """The outcome of one incoming message, for adapters and tests."""

    status: str  # "ok", "failed", "duplicate", "denied", "rate_limited", "too_long"
    answer_id: int | None = None
    user_message_id: int | None = None
    text: str = ""
    dropped_turns: int = 0
    notice: str = ""
    #: The class name of the error behind a failure ("BackendUnavailableError"...), or "".
    error: str = ""
    message_ids: tuple[str, ...] = field(default_factory=tuple)
    #: In a battle, this is answer A's result and ``rival`` answer B's (None otherwise).
    rival: AnswerResult | None = None


@dataclass(frozen=True)
class Said:
    """One line of a thread as the bot remembers it (for /history)."""

    role: str  # "user" or "assistant"
    content: str
    #: An answer to a message that had an answer before (a retry, or 🔄 on a finished one).
    retry: bool = False
    #: "A" or "B": one of the two answers of a side-by-side battle (then not a retry).
    side: str = ""


class ReplySink(Protocol):
    """The platform side of one answer: the adapter posts and edits; the engine decides what.

    The engine wraps a sink in a ReplyStreamer (koalabot/engine/streaming.py), which throttles
    edits and splits long answers; a sink only does single platform calls.
    """

    #: Longest text one platform message should carry.
    max_chars: int
    #: Minimum seconds between two edits of one message.
    edit_interval: float

    async def post(self, text: str) -> str:
        """Post a new message in the thread; return its platform message id."""
        ...

    async def edit(self, message_id: str, text: str) -> None:
        """Replace the text of a message posted by ``post``."""
        ...

    async def finish(self, message_id: str, text: str, answer_id: int) -> None:
        """Final edit of the last message of an answer, with the feedback controls for it."""
        ...

    async def notice(self, text: str) -> None:
        """Tell the user something that is not a model answer (errors, limits, cut history)."""
        ...

    async def thinking(self, on: bool) -> None:
        """Show or clear a 'thinking' status while waiting for the first token (may be a no-op)."""
        ...


@runtime_checkable
class BattleOffer(Protocol):
    """A sink that can show a battle's one choice (A / B / tie / both bad) under answer B."""

    async def offer_choice(self, message_id: str, text: str, a_id: int, b_id: int) -> None:
        """Final edit of answer B's last message: the feedback controls for ``b_id`` and the
        choice between answers ``a_id`` and ``b_id``."""
        ...


@runtime_checkable
class SideBySide(Protocol):
    """A sink that can make another for a second answer in the same thread, so that a battle's
    B streams beside A (Slack, Discord; the terminal shows one answer after the other)."""

    def beside(self) -> ReplySink:
        """A fresh sink posting in the same thread as this one."""
        ...


@runtime_checkable
class RetryOffer(Protocol):
    """A sink that can show a 🔄 button under a failure notice (Slack, Discord)."""

    async def offer_retry(self, message_id: str, text: str, answer_id: int) -> None:
        """Final edit of a failed answer's last message, with a 🔄 for ``answer_id`` under it
        (the regenerate button of a finished answer)."""
        ...


def has_words(text: str) -> bool:
    """Whether a message says anything: not only whitespace and invisible format characters
    (zero-width spaces and joiners, direction marks)."""
    rest = text.lstrip()
    if rest[:1].isprintable() and rest:
        return True  # isprintable is False for format characters: the usual case, at once
    return any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in rest)
