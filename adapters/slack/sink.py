"""The Slack side of one answer: a ReplySink whose every method is one Web API call.

The engine's ReplyStreamer decides when to post and edit (about once per ``edit_interval``,
parts of at most ``max_chars``); this sink only speaks Slack: ``chat.postMessage`` in the
thread, ``chat.update``, the feedback buttons on the final edit, and the Assistant status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import Block, SectionBlock
from slack_sdk.models.blocks.basic_components import MarkdownTextObject
from slack_sdk.web.async_client import AsyncWebClient

from koalabot.engine.notices import offers_opt_out

from .buttons import choice_buttons, feedback_buttons, opt_out_button, retry_button

log = logging.getLogger(__name__)

#: Longest answer part per message. A section block holds 3000 characters; escaping can grow
#: the text, so the final edit may use several sections.
MAX_CHARS = 3000
SECTION_CHARS = 3000
THINKING_STATUS = "is thinking…"
Buttons = Callable[[int], Block]


def escape(text: str) -> str:
    """Slack's message-text escaping, so model output can never ping ``<!channel>`` or a user."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _sections(text: str) -> list[str]:
    """Escaped ``text`` cut into section-sized pieces at line breaks (entities kept whole)."""
    pieces: list[str] = []
    while len(text) > SECTION_CHARS:
        cut = text.rfind("\n", 0, SECTION_CHARS)
        if cut <= 0:
            cut = SECTION_CHARS
            amp = text.rfind("&", cut - 5, cut)
            if amp != -1 and ";" not in text[amp:cut]:
                cut = amp
        pieces.append(text[:cut])
        text = text[cut:].lstrip("\n")
    return [*pieces, text] if text.strip() else pieces


def answer_blocks(
    text: str, answer_id: int, buttons: Buttons = feedback_buttons, extra: Sequence[Block] = ()
) -> list[Block]:
    """An answer's final body and its 👍 / 👎 / 🔄 buttons (the value is the answer id); a
    failed one's notice gets ``retry_button`` instead; ``extra`` (a battle's choice) below."""
    body: list[Block] = [SectionBlock(text=MarkdownTextObject(text=s)) for s in _sections(text)]
    consent = [opt_out_button()] if offers_opt_out(text, "slack") else []
    return [*body, buttons(answer_id), *extra, *consent]


class SlackReplySink:
    """Posts and edits one answer in a Slack thread (see koalabot.events.ReplySink)."""

    max_chars = MAX_CHARS

    def __init__(
        self,
        client: AsyncWebClient,
        channel: str,
        thread_ts: str,
        *,
        edit_interval: float,
        assistant: bool = False,
    ) -> None:
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self.edit_interval = edit_interval
        #: In an Assistant thread the "thinking" status is shown with assistant.threads.setStatus.
        self.assistant = assistant

    def beside(self) -> SlackReplySink:
        """A sink for another answer in this thread (a battle's B)."""
        return SlackReplySink(
            self.client,
            self.channel,
            self.thread_ts,
            edit_interval=self.edit_interval,
            assistant=self.assistant,
        )

    async def post(self, text: str) -> str:
        """A new message in the thread; its ``ts`` is the message id."""
        response = await self.client.chat_postMessage(
            channel=self.channel, thread_ts=self.thread_ts, text=escape(text) or "…"
        )
        return str(response["ts"])

    async def edit(self, message_id: str, text: str) -> None:
        """Replace a posted message's text (chat.update)."""
        await self.client.chat_update(channel=self.channel, ts=message_id, text=escape(text) or "…")

    async def finish(
        self,
        message_id: str,
        text: str,
        answer_id: int,
        buttons: Buttons = feedback_buttons,
        extra: Sequence[Block] = (),
    ) -> None:
        """The final text with the feedback buttons under it."""
        escaped = escape(text) or "…"
        await self.client.chat_update(
            channel=self.channel,
            ts=message_id,
            text=escaped,
            blocks=answer_blocks(escaped, answer_id, buttons, extra),
        )

    async def offer_choice(self, message_id: str, text: str, a_id: int, b_id: int) -> None:
        """Answer B's final text: its feedback buttons, then the battle's choice."""
        await self.finish(message_id, text, b_id, extra=[choice_buttons(a_id, b_id)])

    async def offer_retry(self, message_id: str, text: str, answer_id: int) -> None:
        """A failure notice with a 🔄 under it that retries answer ``answer_id``."""
        await self.finish(message_id, text, answer_id, retry_button)

    async def notice(self, text: str) -> None:
        """A plain-words note in the thread (errors, limits, cut history)."""
        await self.client.chat_postMessage(
            channel=self.channel, thread_ts=self.thread_ts, text=escape(text)
        )

    async def thinking(self, on: bool) -> None:
        """Show or clear the Assistant "is thinking…" status; cosmetic, so never fails."""
        if not self.assistant:
            return
        try:
            await self.client.assistant_threads_setStatus(
                channel_id=self.channel,
                thread_ts=self.thread_ts,
                status=THINKING_STATUS if on else "",
            )
        except SlackApiError as exc:
            log.info("no assistant status in %s: %s", self.channel, exc.response.get("error"))
            self.assistant = False
