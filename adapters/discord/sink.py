"""The Discord side of one answer: single REST calls the engine's ReplyStreamer schedules."""

from __future__ import annotations

import logging

import discord
from discord.abc import Messageable

from koalabot.engine.notices import offers_opt_out

from .buttons import feedback_view, retry_view

#: Discord rejects message content longer than this (Create/Edit Message).
MAX_CHARS = 2000

log = logging.getLogger(__name__)


def _nonempty(text: str) -> str:
    # Discord refuses an empty message (code 50006); a zero-width space keeps the slot.
    return text if text.strip() else "\u200b"


class DiscordReplySink:
    """Posts and edits the bot's messages in one thread or DM channel.

    discord.py waits out 429s (its per-route buckets read Discord's rate-limit headers), so an
    edit here may take longer than one round trip; the streamer keeps one call in flight.
    """

    max_chars: int = MAX_CHARS

    def __init__(
        self,
        channel: Messageable,
        *,
        edit_interval: float,
        reply_to: discord.PartialMessage | None = None,
    ) -> None:
        self.channel = channel
        self.edit_interval = edit_interval
        self._question = reply_to
        self._reply_to = reply_to
        self._typing: _Typing | None = None

    def beside(self) -> DiscordReplySink:
        """A sink for another answer in this conversation (a battle's B), replying to the same
        message when answering in a channel."""
        return DiscordReplySink(
            self.channel, edit_interval=self.edit_interval, reply_to=self._question
        )

    async def post(self, text: str) -> str:
        """A new message; the first one replies to ``reply_to`` when answering in a channel."""
        reference, self._reply_to = self._reply_to, None
        if reference is None:
            message = await self.channel.send(_nonempty(text))
        else:
            message = await self.channel.send(
                _nonempty(text), reference=reference, mention_author=False
            )
        return str(message.id)

    async def edit(self, message_id: str, text: str) -> None:
        """Replace the text of a message posted by ``post`` (one PATCH, no fetch)."""
        await self._message(message_id).edit(content=_nonempty(text))

    async def finish(self, message_id: str, text: str, answer_id: int) -> None:
        """The final text with the 👍 👎 🔄 buttons for ``answer_id`` under it."""
        view = feedback_view(answer_id, opt_out=offers_opt_out(text, "discord"))
        await self._message(message_id).edit(content=_nonempty(text), view=view)

    async def offer_choice(self, message_id: str, text: str, a_id: int, b_id: int) -> None:
        """Answer B's final text: its 👍 👎 🔄 and the battle's choice between A and B."""
        view = feedback_view(b_id, opt_out=offers_opt_out(text, "discord"), rival=a_id)
        await self._message(message_id).edit(content=_nonempty(text), view=view)

    async def offer_retry(self, message_id: str, text: str, answer_id: int) -> None:
        """A failure notice with a 🔄 under it that retries answer ``answer_id``."""
        await self._message(message_id).edit(content=_nonempty(text), view=retry_view(answer_id))

    async def notice(self, text: str) -> None:
        """A plain message in the conversation (errors, limits)."""
        await self.channel.send(_nonempty(text))

    async def thinking(self, on: bool) -> None:
        """Keep Discord's "koala is typing…" shown until the first token arrives."""
        if on and self._typing is None:
            self._typing = _Typing(self.channel)
            await self._typing.start()
        elif not on and self._typing is not None:
            typing, self._typing = self._typing, None
            await typing.stop()

    def _message(self, message_id: str) -> discord.PartialMessage:
        get = getattr(self.channel, "get_partial_message", None)
        if get is None:
            raise TypeError(f"cannot edit messages in {self.channel!r}")
        message: discord.PartialMessage = get(int(message_id))
        return message


class _Typing:
    """discord.py's typing context manager, entered and left from two different calls."""

    def __init__(self, channel: Messageable) -> None:
        self._context = channel.typing()
        self._started = False

    async def start(self) -> None:
        try:
            await self._context.__aenter__()
        except discord.HTTPException:  # a missing typing indicator must not fail the answer
            log.debug("could not show typing", exc_info=True)
            return
        self._started = True

    async def stop(self) -> None:
        if self._started:
            await self._context.__aexit__(None, None, None)
