"""The Slack side of one answer on Slack's streaming API, falling back to chat.update.

The engine's ReplyStreamer still decides when text shows and where a long answer splits; this
sink turns its calls into streaming calls: ``post`` starts a stream (the placeholder becomes
Slack's own "being written" look, no "…"), ``edit`` appends what is new, and ``finish`` stops the
stream with Slack's 👍/👎 ``feedback_buttons`` and a 🔄 ``icon_button`` (adapters/slack/stream.py).
Each part of a long answer is a stream of its own, so every message gets its id into the store
the same way as on the edit path (reactions and the clicked-message check need them).

A stream only grows, so an edit that does not extend what Slack shows (the splitter moved a cut
back) cannot be an append: the stream is stopped and that message is chat.update'd instead.
An edit without the streamer's cursor is a final one (a finished part, or a failure notice): it
stops the stream, so no answer is left mid-stream; a post of complete text (a part posted
finished, or the end of a failure notice) stops by itself after one edit interval unless
``finish`` comes first. An edit of a message this sink never streamed
(an answer a crash cut off, told after restart) stops that stream with the notice under it, or
chat.update's it if it is not streaming.

Refusal (any error of chat.startStream, or the stream gone midway): the answer goes on with the
chat.update path (``SlackReplySink``) from where it stands, the log says why once per error code,
and in ``auto`` mode a channel whose refusal is not a passing one is not tried again by this
process. ``on`` always tries streaming first; ``off`` never streams.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from slack_sdk.models.blocks import Block
from slack_sdk.web.async_client import AsyncWebClient

from koalabot.engine.notices import offers_opt_out
from koalabot.engine.streaming import CURSOR, PLACEHOLDER

from .buttons import choice_buttons, opt_out_button
from .sink import MAX_CHARS, SlackReplySink
from .stream import SlackStream, StreamRefused, stop_with

log = logging.getLogger(__name__)

#: Longest answer part per streamed message (a streamed message renders as markdown: Slack caps
#: that at 12,000 characters; see stream.py).
STREAM_MAX_CHARS = 10_000
MODES = ("auto", "on", "off")


@dataclass
class StreamingChoice:
    """Which path answers take, for one adapter: ``auto`` streams where Slack lets it."""

    mode: str = "auto"
    refused: set[str] = field(default_factory=set)  # channels that refused, in auto mode
    told: set[str] = field(default_factory=set)  # error codes already logged

    def wanted(self, channel: str) -> bool:
        """Whether an answer in ``channel`` should try the streaming API."""
        return self.mode == "on" or (self.mode == "auto" and channel not in self.refused)

    def refusal(self, channel: str, exc: StreamRefused) -> None:
        """Slack refused a stream in ``channel``: say why once, remember it if it will last."""
        if exc.error not in self.told:
            self.told.add(exc.error)
            log.warning(
                "Slack refused its streaming API (%s): answering by chat.update instead "
                "(KOALABOT_SLACK_STREAMING=off skips the attempt)",
                exc.error,
            )
        if self.mode == "auto" and not exc.passing:
            self.refused.add(channel)


def _body(text: str) -> str:
    """The answer text the streamer means: without its cursor, and nothing for the placeholder."""
    text = text.removesuffix(CURSOR)
    return "" if text == PLACEHOLDER else text


class SlackStreamingSink:
    """One answer in a Slack thread through chat.startStream/appendStream/stopStream."""

    def __init__(
        self,
        edits: SlackReplySink,
        choice: StreamingChoice,
        *,
        recipient_team_id: str | None = None,
        recipient_user_id: str | None = None,
    ) -> None:
        #: The chat.update path: the fallback, and notices and status.
        self.edits = edits
        self.client: AsyncWebClient = edits.client
        self.channel = edits.channel
        self.choice = choice
        self.edit_interval = edits.edit_interval
        self.streaming = choice.wanted(self.channel)
        self.max_chars = STREAM_MAX_CHARS if self.streaming else MAX_CHARS
        in_channel = not self.channel.startswith("D")  # Slack asks for recipients in channels
        self._team = recipient_team_id if in_channel else None
        self._user = recipient_user_id if in_channel else None
        self._streams: dict[str, SlackStream] = {}  # messages of this answer still streaming
        self._mine: set[str] = set()  # every message of this answer
        self._closing: dict[str, asyncio.Task[None]] = {}  # complete streams, stopping soon

    def beside(self) -> SlackStreamingSink:
        """A sink for another answer in this thread (a battle's B): streams of its own."""
        return SlackStreamingSink(
            self.edits.beside(),
            self.choice,
            recipient_team_id=self._team,
            recipient_user_id=self._user,
        )

    async def post(self, text: str) -> str:
        """Start the next message of the answer (a stream, unless Slack refuses)."""
        for ts in list(self._streams):  # the previous part is complete
            await self._end(ts)
        started = await self._start(_body(text)) if self.streaming else None
        ts = started or await self.edits.post(text)
        self._mine.add(ts)
        if started and not text.endswith(CURSOR) and text != PLACEHOLDER:
            # Complete text: the streamer's finish() follows at once (and stops it with the
            # buttons); after a failure notice nothing does, so it stops on its own.
            self._closing[ts] = asyncio.create_task(self._end_later(ts))
        return ts

    async def edit(self, message_id: str, text: str) -> None:
        """Append what is new; a final edit (no cursor) also stops the stream."""
        stream = self._streams.get(message_id)
        if stream is None:
            await self._edit_other(message_id, text)
            return
        body = _body(text)
        if not stream.replace(body):
            await self._give_up(message_id, body)
            return
        try:
            await stream.flush()
            if not text.endswith(CURSOR):
                await self._end(message_id)
        except StreamRefused as exc:
            await self._lost(message_id, exc, body)

    async def finish(
        self, message_id: str, text: str, answer_id: int, extra: Sequence[Block] = ()
    ) -> None:
        """The last text, then the stream stops with the feedback buttons (and ``extra``, a
        battle's choice) under it."""
        self._cancel_closing(message_id)
        stream = self._streams.get(message_id)
        if stream is None or not stream.replace(text):
            if stream is not None:
                await self._end_quietly(self._streams.pop(message_id))
            await self.edits.finish(message_id, text, answer_id, extra=extra)
            return
        consent = [opt_out_button()] if offers_opt_out(text, "slack") else []
        try:  # another error leaves the stream open for the streamer's retry of finish()
            await stream.finish(answer_id, [*extra, *consent])
        except StreamRefused as exc:
            self._streams.pop(message_id, None)
            self.choice.refusal(self.channel, exc)
            await self.edits.finish(message_id, text, answer_id, extra=extra)
            return
        self._streams.pop(message_id, None)

    async def offer_choice(self, message_id: str, text: str, a_id: int, b_id: int) -> None:
        """Answer B's last text: the stream stops with its buttons and the battle's choice."""
        await self.finish(message_id, text, b_id, [choice_buttons(a_id, b_id)])

    async def offer_retry(self, message_id: str, text: str, answer_id: int) -> None:
        """A failure notice with a 🔄 under it: the stream stops, then chat.update."""
        self._cancel_closing(message_id)
        if (stream := self._streams.pop(message_id, None)) is not None:
            await self._end_quietly(stream)
        await self.edits.offer_retry(message_id, text, answer_id)

    async def notice(self, text: str) -> None:
        """A plain-words note in the thread (a message of its own)."""
        await self.edits.notice(text)

    async def thinking(self, on: bool) -> None:
        """The Assistant "is thinking…" status, as on the edit path."""
        await self.edits.thinking(on)

    # --- steps -------------------------------------------------------------------------------

    async def _start(self, text: str) -> str | None:
        """A new stream showing ``text``; None (and the edit path from now on) if refused."""
        stream = SlackStream(
            self.client,
            self.channel,
            self.edits.thread_ts,
            recipient_team_id=self._team,
            recipient_user_id=self._user,
            interval=0.0,  # the engine's streamer paces the edits
            max_chars=self.max_chars,
        )
        try:
            ts = await stream.open()
            if stream.replace(text):
                await stream.flush()
        except StreamRefused as exc:
            self._fall_back(exc)
            return None
        self._streams[ts] = stream
        return ts

    async def _end(self, message_id: str) -> None:
        self._cancel_closing(message_id)
        stream = self._streams.get(message_id)
        if stream is None:
            return
        try:  # another error leaves it open, for the next edit or finish() to stop
            await stream.end()
        except StreamRefused as exc:
            await self._lost(message_id, exc, exc.text)
            return
        self._streams.pop(message_id, None)

    async def _end_later(self, message_id: str) -> None:
        await asyncio.sleep(self.edit_interval)
        self._closing.pop(message_id, None)
        try:
            await self._end(message_id)
        except Exception:  # a task of its own: nobody else would hear of it
            log.warning("could not stop a finished stream", exc_info=True)

    def _cancel_closing(self, message_id: str) -> None:
        task = self._closing.pop(message_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _give_up(self, message_id: str, body: str) -> None:
        """The text no longer extends what the stream shows: stop it, then chat.update."""
        self._cancel_closing(message_id)
        await self._end_quietly(self._streams.pop(message_id))
        await self.edits.edit(message_id, body)

    async def _end_quietly(self, stream: SlackStream) -> None:
        try:
            await stream.end()
        except StreamRefused as exc:
            log.info("stream already ended: %s", exc.error)

    async def _lost(self, message_id: str, exc: StreamRefused, body: str) -> None:
        """The stream went away midway: show the whole text with chat.update from now on."""
        self._streams.pop(message_id, None)
        self._fall_back(exc)
        await self.edits.edit(message_id, body)

    def _fall_back(self, exc: StreamRefused) -> None:
        self.choice.refusal(self.channel, exc)
        self.streaming = False
        self.max_chars = MAX_CHARS  # the streamer splits for chat.update from its next edit on

    async def _edit_other(self, message_id: str, text: str) -> None:
        """A message not streaming here: a crash's orphan is stopped with the notice under it;
        anything else (or a stream Slack already ended) is updated."""
        orphan = self.choice.mode != "off" and message_id not in self._mine
        if not (orphan and await stop_with(self.client, self.channel, message_id, text)):
            await self.edits.edit(message_id, text)
