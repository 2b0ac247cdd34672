"""Show an answer while it is generated: throttled, coalesced edits, and long answers split.

Platforms limit edits (Slack's chat.update is Tier 3, Discord counts per channel) and message
length, and a model emits tokens far faster than either allows. One ReplyStreamer per answer
posts a placeholder at once, shows the first words as soon as the model sends them, then edits
on a clock with at most one call in flight; whatever was skipped is covered by the next edit, and
the final text is always sent.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable

from koalabot.events import BattleOffer, ReplySink, RetryOffer

log = logging.getLogger(__name__)

PLACEHOLDER = "…"
CURSOR = " ▍"
_FENCE = re.compile(r"^[ \t]*```", re.MULTILINE)


class _Fences:
    """The code fences of ``text`` before ``end``, found once: a long code block has many
    candidate cut points, and scanning the text again for each made an edit take 0.15 s."""

    def __init__(self, text: str, end: int) -> None:
        self.text = text
        self.matches = list(_FENCE.finditer(text, 0, end))
        self.ends = [match.end() for match in self.matches]

    def open_at(self, pos: int) -> str | None:
        """The opening fence line if ``pos`` is inside a code fence, else None."""
        count = bisect.bisect_right(self.ends, pos)
        if count % 2 == 0:
            return None
        start = self.matches[count - 1].start()
        end = self.text.find("\n", start)
        return self.text[start : end if end != -1 else len(self.text)].strip()


def _fence_open_at(text: str, pos: int) -> str | None:
    """The opening fence line if ``pos`` is inside a code fence, else None."""
    return _Fences(text, pos).open_at(pos)


def _cut_point(text: str, limit: int) -> int:
    """Where to end the first part: a paragraph break, else a line, else a sentence, else a space,
    preferring points outside code fences."""
    window = text[:limit]
    fences = _Fences(text, limit)
    for sep in ("\n\n", "\n", ". ", " "):
        pos = window.rfind(sep)
        while pos > limit // 4:
            cut = pos + len(sep)
            if fences.open_at(cut) is None:
                return cut
            pos = window.rfind(sep, 0, pos)
    newline = window.rfind("\n")
    return newline + 1 if newline > limit // 4 else limit


def split_message(text: str, limit: int) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` characters for one platform message each.

    Splits at paragraph boundaries where it can and never leaves a code fence open: a code
    block longer than a message is closed at the end of one part and reopened in the next.
    """
    if limit < 32:
        raise ValueError("limit must be at least 32 characters")
    parts: list[str] = []
    reopen = ""
    rest = text
    while len(reopen) + len(rest) > limit:
        body = reopen + rest
        cut = _cut_point(body, limit - 4)  # room to close a fence
        part, rest = body[:cut], body[cut:]
        fence = _fence_open_at(body, cut)
        if fence is not None:
            part = part.rstrip("\n") + "\n```"
            reopen = fence + "\n"
        else:
            reopen = ""
        parts.append(part.rstrip() or part)
        rest = rest.lstrip("\n") if not reopen else rest
    parts.append(reopen + rest)
    return parts


class ReplyStreamer:
    """Posts a placeholder, then edits it as text arrives, about once per sink.edit_interval."""

    def __init__(self, sink: ReplySink, placeholder: str = PLACEHOLDER) -> None:
        self.sink = sink
        self.placeholder = placeholder
        self.message_ids: list[str] = []
        self.edit_calls = 0
        self._sent: list[str] = []
        self._pieces: list[str] = []  # joined when shown, not per token: see `text`
        self._changed = asyncio.Event()
        self._closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Post the placeholder and start the edit clock."""
        await self._post(self.placeholder)
        self._task = asyncio.create_task(self._run(), name="reply-streamer")

    def add(self, piece: str) -> None:
        """The model's next piece of the answer; constant work, called once per token."""
        self._pieces.append(piece)
        self._changed.set()

    def update(self, text: str) -> None:
        """The whole answer so far, in place of what was added."""
        self._pieces = [text]
        self._changed.set()

    @property
    def has_text(self) -> bool:
        """Whether any piece (even white space) has come."""
        return any(self._pieces)

    @property
    def text(self) -> str:
        """The answer so far, as the model sent it (joined once per read, not per token)."""
        if len(self._pieces) > 1:
            self._pieces[:] = ["".join(self._pieces)]
        return self._pieces[0] if self._pieces else ""

    async def finish(self, text: str, answer_id: int, rival: int | None = None) -> None:
        """Stop the clock and make every part show its final text; the last gets the buttons
        (with ``rival``, answer A's id, and a sink that can: the battle's choice too)."""
        await self._stop()
        parts = split_message(text or " ", self.sink.max_chars)
        sink = self.sink
        if rival is not None and isinstance(sink, BattleOffer):

            async def choice(message_id: str, shown: str, b_id: int) -> None:
                await sink.offer_choice(message_id, shown, rival, b_id)

            await self._end(parts, choice, answer_id)
            return
        await self._end(parts, self.sink.finish, answer_id)

    async def fail(self, notice: str, partial: str = "", retry: int | None = None) -> None:
        """Turn the answer into a plain-words notice, keeping what was already said; with
        ``retry`` (the failed answer's id), a sink that can offers a 🔄 under it."""
        await self._stop()
        shown = f"{partial.rstrip()}\n\n⚠️ {notice}" if partial.strip() else f"⚠️ {notice}"
        parts = split_message(shown, self.sink.max_chars)
        if retry is None or not isinstance(self.sink, RetryOffer):
            await self._show(parts, final=True)
            return
        await self._end(parts, self.sink.offer_retry, retry)

    async def _end(
        self, parts: list[str], last: Callable[[str, str, int], Awaitable[None]], answer_id: int
    ) -> None:
        """Show every part; the last through ``last`` (the sink's call that adds buttons)."""
        await self._show(parts[:-1], final=True)
        if len(self.message_ids) < len(parts):
            await self._post(parts[-1])
        await self._retrying(last, self.message_ids[len(parts) - 1], parts[-1], answer_id)

    async def _stop(self) -> None:
        self._closed.set()
        self._changed.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task

    async def _run(self) -> None:
        """Show the first words as soon as they exist, then edit on the clock.

        The first edit comes ahead of the clock rather than on top of it: the edit after it
        waits for the clock's second beat, so an answer costs no more edits than with a clock
        that started at the placeholder, and the person sees text a model's first token later.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        last: float | None = None  # no words shown yet
        while True:
            await self._changed.wait()
            if last is not None:
                await self._pause(self.sink.edit_interval - (loop.time() - last))
            if self._closed.is_set():
                return
            self._changed.clear()
            if last is None and not self.text.strip():
                continue  # nothing to show yet: the placeholder says as much
            began = loop.time()
            await self._show_progress()
            done = loop.time()
            first_beat = started + self.sink.edit_interval + (done - began)
            last = done if last is not None else max(done, first_beat)

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` seconds, or less if the answer is closed meanwhile."""
        if delay > 0 and not self._closed.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closed.wait()

    async def _show_progress(self) -> None:
        parts = split_message(self.text.strip(), self.sink.max_chars)
        if len(parts[-1]) + len(CURSOR) <= self.sink.max_chars:
            parts[-1] += CURSOR
        try:
            await self._show(parts, final=False)
        except Exception:  # a failed intermediate edit is covered by the next one
            log.warning("intermediate edit failed", exc_info=True)

    async def _show(self, parts: list[str], *, final: bool) -> None:
        for index, part in enumerate(parts):
            if index < len(self.message_ids):
                if self._sent[index] != part:
                    if final:
                        await self._retrying(self._edit, index, part)
                    else:
                        await self._edit(index, part)
            elif final:
                await self._retrying(self._post, part)
            else:
                await self._post(part)

    async def _post(self, text: str) -> None:
        message_id = await self.sink.post(text)
        self.message_ids.append(message_id)
        self._sent.append(text)

    async def _edit(self, index: int, text: str) -> None:
        self.edit_calls += 1
        await self.sink.edit(self.message_ids[index], text)
        self._sent[index] = text

    async def _retrying(self, call: object, *args: object) -> None:
        """Final edits are guaranteed: retry a few times before giving up loudly."""
        assert callable(call)
        for attempt in range(4):
            try:
                await call(*args)
                return
            except Exception:
                if attempt == 3:
                    raise
                log.warning("final edit failed, retrying", exc_info=True)
                await asyncio.sleep(0.5 * 2**attempt)
