"""One answer streamed with Slack's own text streaming: chat.startStream, appendStream, stopStream.

Slack shows a streamed message with its native "typing" look and takes one append per flush
instead of a whole-message chat.update: about as many calls as editing, but cheaper ones
(appendStream is Tier 4, chat.update Tier 3) that carry only the new text. The final
chat.stopStream carries a ``context_actions`` block: Slack's 👍/👎 ``feedback_buttons``
(values ``up:<answer id>`` / ``down:<answer id>``) and an ``icon_button`` for 🔄 (value: the
answer id, action id ``koalabot_regenerate`` as today).

Why not slack_sdk's ``AsyncWebClient.chat_stream`` helper: it flushes only when its buffer holds
``buffer_size`` characters (256 by default), so the first words of an answer wait for 256
characters and the tail of a slow answer waits for ``stop()``; it has no clock, and it cannot end
one message and go on in the next. This sink buffers on a clock instead: the first words go at
once, then what gathered is sent every ``interval`` (checked on each ``append``; call ``flush``
from a clock of your own for a model that pauses). ``buffer_size`` adds slack_sdk's rule (also
flush at that many characters) but is off by default: on the fake Slack a 2,000-character
answer from a fast model (1,000 characters a second, 1 s clock, run 10x faster) cost 9 calls with
it at 256, 7-8 without it, and 8 on today's edit path; at 200 characters a second both paths cost
13-15 calls (appendStream is Tier 4, chat.update Tier 3).
It calls slack_sdk's own methods, so the client's retry handlers apply: with slack_sdk's
``AsyncRateLimitErrorRetryHandler`` on the client (the Slack adapter installs one) a 429 waits
``Retry-After`` and resends the same call, and since every call is awaited before the next one
the text stays in order. Text leaves the buffer only once Slack took it: a failed flush keeps it
for the next.

Splitting: a message ends past ``max_chars`` at the cut ``split_message`` (the engine's splitter
for every platform) picks: a paragraph break, never inside a code fence (a fence too long for one
message is closed and reopened). A stream can only grow, so from half of ``max_chars`` on the sink
streams only up to the cut a split would pick now, which the final cut can never fall before;
in the second half of a message text therefore appears a paragraph (or line) at a time, and a
code block once it is closed. ``max_chars`` is 10,000 by default: a streamed message renders as
markdown, which Slack caps at 12,000 characters and users saw refused near 13,200. Only an
unbroken paragraph or code block longer than half a message can make the final cut fall before
what was shown: the message then ends where it stands.

Refusal: where Slack refuses the streaming API (any error of chat.startStream: an older
workspace, a surface without streaming, a missing scope, ``invalid_arguments``…), or the stream
is gone (``message_not_in_streaming_state`` / ``message_not_found`` on append or stop), the sink
raises ``StreamRefused`` with everything not yet shown, so the caller can go on with chat.update.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextActionsBlock,
    FeedbackButtonObject,
    FeedbackButtonsElement,
    IconButtonElement,
)
from slack_sdk.web.async_client import AsyncWebClient

from koalabot.engine.streaming import split_message

from .buttons import ACTION_REGENERATE
from .sink import escape

log = logging.getLogger(__name__)

ACTION_FEEDBACK = "koalabot_feedback"
#: Slack's limit for ``markdown_text`` in one streaming call (chat.startStream reference).
STREAM_TEXT_LIMIT = 12_000
#: Raw characters per call: escaping (``&`` → ``&amp;``) grows text at most fivefold.
_RAW_PER_CALL = STREAM_TEXT_LIMIT // 5
#: Errors on append/stop meaning the stream is no longer there to append to.
_GONE = frozenset({"message_not_in_streaming_state", "message_not_found"})
#: Refusals that say nothing about the next answer (the rest: this workspace or surface does not
#: stream, e.g. ``channel_type_not_supported``, ``missing_scope``, ``invalid_arguments``).
_PASSING = _GONE | {"ratelimited", "fatal_error", "service_unavailable", "request_timeout"}
REGENERATE_ICON = "refresh"
REGENERATE = "🔄 Regenerate"


class StreamRefused(Exception):
    """Slack would not stream (``error``): go on with chat.update / chat.postMessage.

    ``ts`` is the streamed message still open (None if none was started): show ``text`` in it
    with chat.update, or post ``text`` if there is none. ``message_ids`` are all the messages of
    this answer so far (``ts`` last, if any). ``passing`` says the next answer may stream again.
    """

    def __init__(self, error: str, *, ts: str | None, text: str, message_ids: list[str]) -> None:
        super().__init__(f"Slack refused streaming: {error}")
        self.error = error
        self.ts = ts
        self.text = text
        self.message_ids = list(message_ids)

    @property
    def passing(self) -> bool:
        """True for a refusal of this one stream, not of streaming here."""
        return self.error in _PASSING


def feedback_value(rating: int, answer_id: int) -> str:
    """The value of a feedback button: which vote, on which answer."""
    return f"{'up' if rating > 0 else 'down'}:{answer_id}"


def parse_feedback_value(value: str) -> tuple[int, int] | None:
    """``(rating, answer_id)`` from a feedback button's value; None if it is not ours."""
    vote, _, answer = value.partition(":")
    if vote not in ("up", "down") or not answer.isdigit():
        return None
    return (1 if vote == "up" else -1, int(answer))


def feedback_blocks(answer_id: int, *, icon: bool = True) -> list[Block]:
    """👍/👎 feedback buttons and 🔄 under an answer (a fresh block_id each time, as Slack asks).

    With ``icon=False`` the 🔄 is a classic button in an actions block, for workspaces that take
    no icon of that name (the icon button reference once listed "trash" as the only icon).
    """
    suffix = f"{answer_id}_{uuid.uuid4().hex[:8]}"
    feedback = FeedbackButtonsElement(
        action_id=ACTION_FEEDBACK,
        positive_button=FeedbackButtonObject(
            text="👍", value=feedback_value(1, answer_id), accessibility_label="Good answer"
        ),
        negative_button=FeedbackButtonObject(
            text="👎", value=feedback_value(-1, answer_id), accessibility_label="Bad answer"
        ),
    )
    if not icon:
        again = ButtonElement(text=REGENERATE, action_id=ACTION_REGENERATE, value=str(answer_id))
        return [
            ContextActionsBlock(block_id=f"koalabot_feedback_{suffix}", elements=[feedback]),
            ActionsBlock(block_id=f"koalabot_again_{suffix}", elements=[again]),
        ]
    regenerate = IconButtonElement(
        action_id=ACTION_REGENERATE,
        icon=REGENERATE_ICON,
        text=REGENERATE,
        accessibility_label="Write this answer again",
        value=str(answer_id),
    )
    return [
        ContextActionsBlock(block_id=f"koalabot_feedback_{suffix}", elements=[feedback, regenerate])
    ]


async def stop_interrupted(client: AsyncWebClient, channel: str, ts: str, notice: str) -> bool:
    """After a crash: stop a stream left open with a notice; False if it is no longer streaming
    (Slack ended it, or it was never a stream), for the caller to chat.update instead."""
    return await stop_with(client, channel, ts, f"⚠️ {notice}")


async def stop_with(client: AsyncWebClient, channel: str, ts: str, text: str) -> bool:
    """Stop a stream someone else opened with ``text`` under what it shows (a paragraph of its
    own); False if it is no longer streaming, for the caller to chat.update instead."""
    try:
        await client.chat_stopStream(channel=channel, ts=ts, markdown_text=f"\n\n{escape(text)}")
    except SlackApiError as exc:
        if exc.response.get("error") in _GONE:
            return False
        raise
    return True


class SlackStream:
    """Streams one answer into a thread; ``append`` deltas, then ``finish`` (or ``interrupt``).

    Calls may come from several tasks (a token loop and a clock calling ``flush``): each call
    runs alone, so text keeps its order.
    """

    def __init__(
        self,
        client: AsyncWebClient,
        channel: str,
        thread_ts: str,
        *,
        recipient_team_id: str | None = None,
        recipient_user_id: str | None = None,
        buffer_size: int | None = None,
        interval: float = 1.0,
        max_chars: int = 10_000,
    ) -> None:
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self.recipient_team_id = recipient_team_id
        self.recipient_user_id = recipient_user_id
        self.buffer_size = buffer_size
        self.interval = interval
        self.max_chars = max_chars
        #: Finished messages of this answer, then the one streaming (Slack ``ts`` each).
        self.message_ids: list[str] = []
        self.calls = 0
        self._ts: str | None = None  # the message streaming now
        self._sent = ""  # raw text Slack shows in it
        self._pending = ""  # raw text not yet sent
        self._flushed_at = 0.0  # never: the first words are due at once
        self._lock = asyncio.Lock()

    @property
    def text(self) -> str:
        """The current message's whole text, shown or not."""
        return self._sent + self._pending

    async def open(self) -> str:
        """Start the stream now, with no text yet (Slack shows it as being written)."""
        async with self._lock:
            if self._ts is None:
                await self._call_send("")
            assert self._ts is not None
            return self._ts

    def replace(self, text: str) -> bool:
        """Make ``text`` the current message's whole text; False (nothing changed) if it does not
        begin with what Slack already shows, since a stream only grows."""
        if not text.startswith(self._sent):
            return False
        self._pending = text[len(self._sent) :]
        return True

    async def end(self) -> None:
        """Send the rest and stop the stream, without buttons (a part of a longer answer)."""
        async with self._lock:
            await self._roll()
            if self._ts is not None:
                await self._stop(None)

    async def append(self, delta: str) -> None:
        """Add model output; sent at once if nothing is shown yet, else per buffer or clock."""
        self._pending += delta
        due = time.monotonic() - self._flushed_at >= self.interval  # at once for the first words
        full = self.buffer_size is not None and len(self._pending) >= self.buffer_size
        if full or due:
            await self.flush()

    async def flush(self) -> None:
        """Send what is pending now (as far as splitting allows); a failure keeps it pending."""
        async with self._lock:
            if not self.text.strip():
                return
            try:
                await self._roll()
                await self._show(self._safe_length() - len(self._sent))
            except SlackApiError as exc:
                self._refused(exc)
                log.warning("stream append failed: %s", exc.response.get("error"))

    async def finish(self, answer_id: int) -> None:
        """Send the rest and stop the stream with the feedback block under the answer."""
        async with self._lock:
            await self._roll()
            if self._ts is None and not self._pending.strip():
                self._pending = "…"
            await self._stop(feedback_blocks(answer_id), feedback_blocks(answer_id, icon=False))

    async def interrupt(self, notice: str) -> None:
        """End the answer with a plain-words notice after what was said (no buttons)."""
        async with self._lock:
            said = self._pending.rstrip() + "\n\n" if self.text.strip() else ""
            self._pending = f"{said}⚠️ {notice}"
            await self._roll()
            await self._stop(None)

    # --- steps -------------------------------------------------------------------------------

    async def _roll(self) -> None:
        """End the current message at the splitter's cut while the text is past ``max_chars``."""
        while len(self.text) > self.max_chars:
            parts = split_message(self.text, self.max_chars)
            if not parts[0].startswith(self._sent):
                log.info("long paragraph: a message ends where it was shown")
                parts = [self._sent, self.text[len(self._sent) :]]
            later = parts[1:]
            try:
                self._pending = parts[0][len(self._sent) :]
                await self._stop(None)
                while len(later) > 1:
                    self._pending = later.pop(0)
                    await self._stop(None)
            except BaseException as exc:
                self._pending += "".join(later)  # nothing is lost
                if isinstance(exc, StreamRefused):
                    exc.text = self.text
                raise
            self._pending = later[0]

    def _safe_length(self) -> int:
        """How much of the text may be shown now without passing a cut a split could pick."""
        text = self.text
        if len(text) <= max(self.max_chars // 2, 64):
            return len(text)
        head = split_message(text, len(text) - 1)[0]
        return max(len(head), len(self._sent)) if text.startswith(head) else len(self._sent)

    async def _show(self, count: int) -> None:
        """Have Slack show the first ``count`` pending characters (starting the stream if need
        be), in pieces it takes in one call; each piece leaves the buffer once Slack took it."""
        if count <= 0 and self._ts is not None:
            return
        end = len(self._sent) + min(max(count, 0), len(self._pending))
        while True:
            piece = self._pending[: min(end - len(self._sent), _RAW_PER_CALL)]
            await self._call_send(piece)
            self._sent += piece
            self._pending = self._pending[len(piece) :]
            self._flushed_at = time.monotonic()
            if len(self._sent) >= end:
                return

    async def _call_send(self, piece: str) -> None:
        self.calls += 1
        if self._ts is not None:
            await self.client.chat_appendStream(
                channel=self.channel, ts=self._ts, markdown_text=escape(piece)
            )
            return
        try:
            response = await self.client.chat_startStream(
                channel=self.channel,
                thread_ts=self.thread_ts,
                markdown_text=escape(piece) or None,
                recipient_team_id=self.recipient_team_id,
                recipient_user_id=self.recipient_user_id,
            )
        except SlackApiError as exc:
            error = str(exc.response.get("error"))
            refused = StreamRefused(error, ts=None, text=self.text, message_ids=self.message_ids)
            raise refused from exc
        self._ts = str(response["ts"])
        self.message_ids.append(self._ts)

    async def _stop(self, blocks: list[Block] | None, fallback: list[Block] | None = None) -> None:
        """Show what is pending and stop the current message; its last piece rides on the stop."""
        await self._show(len(self._pending) - _RAW_PER_CALL)
        tail = self._pending
        try:
            await self._call_stop(tail, blocks)
        except SlackApiError as exc:
            if exc.response.get("error") != "invalid_blocks" or fallback is None:
                self._refused(exc)
                raise
            log.info("feedback block refused (invalid_blocks): stopping with a classic button")
            await self._call_stop(tail, fallback)
        self._ts, self._sent, self._pending = None, "", ""

    async def _call_stop(self, tail: str, blocks: list[Block] | None) -> None:
        assert self._ts is not None
        self.calls += 1
        await self.client.chat_stopStream(
            channel=self.channel,
            ts=self._ts,
            markdown_text=escape(tail) if tail else None,
            blocks=blocks,
        )

    def _refused(self, exc: SlackApiError) -> None:
        """Raise StreamRefused if the error says the stream is gone; else return."""
        error = str(exc.response.get("error"))
        if error in _GONE:
            refused = StreamRefused(
                error, ts=self._ts, text=self.text, message_ids=self.message_ids
            )
            raise refused from exc
