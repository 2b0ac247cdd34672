"""How an answer shows up on a platform: throttled edits, splits, and the guaranteed final text."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from koalabot.engine.streaming import CURSOR, ReplyStreamer, split_message


@dataclass
class PlatformLog:
    """A stand-in for one platform thread: messages by id and every call made, with times."""

    max_chars: int = 200
    edit_interval: float = 0.2
    messages: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, float]] = field(default_factory=list)
    finished: tuple[str, int] | None = None
    notices: list[str] = field(default_factory=list)
    fail_edits: int = 0

    async def post(self, text: str) -> str:
        message_id = str(len(self.messages) + 1)
        self.messages[message_id] = text
        self.calls.append(("post", asyncio.get_running_loop().time()))
        return message_id

    async def edit(self, message_id: str, text: str) -> None:
        self.calls.append(("edit", asyncio.get_running_loop().time()))
        if self.fail_edits:
            self.fail_edits -= 1
            raise ConnectionError("platform hiccup")
        self.messages[message_id] = text

    async def finish(self, message_id: str, text: str, answer_id: int) -> None:
        await self.edit(message_id, text)
        self.finished = (message_id, answer_id)

    async def notice(self, text: str) -> None:
        self.notices.append(text)

    async def thinking(self, on: bool) -> None:
        return None


def test_short_text_is_one_part() -> None:
    assert split_message("Hello there.", 100) == ["Hello there."]


def test_split_prefers_paragraph_boundaries() -> None:
    text = "First paragraph is here.\n\nSecond paragraph is a bit longer than that."
    parts = split_message(text, 50)
    assert parts == ["First paragraph is here.", "Second paragraph is a bit longer than that."]


def test_split_never_inside_a_code_fence() -> None:
    intro = "Here is the code you asked for, with an explanation after it.\n\n"
    code = "```python\n" + "".join(f"x{i} = {i}\n" for i in range(12)) + "```\n"
    text = intro + code + "\nThat is all."
    parts = split_message(text, 120)
    assert len(parts) > 1
    for part in parts:
        assert len(part) <= 120
        assert part.count("```") % 2 == 0, part  # every part renders its code block closed
    assert "".join(parts).count("x11 = 11") == 1


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab \n.`"), max_size=800), st.integers(32, 200))
def test_split_keeps_every_part_within_the_limit(text: str, limit: int) -> None:
    parts = split_message(text, limit)
    assert all(len(p) <= limit for p in parts)

    # nothing but whitespace and fence markers is lost or added
    def squash(s: str) -> str:
        return "".join(s.split()).replace("`", "")

    assert squash("".join(parts)) == squash(text)


async def test_edits_are_throttled_and_the_final_text_always_arrives() -> None:
    platform = PlatformLog(max_chars=2000, edit_interval=0.2)
    streamer = ReplyStreamer(platform)
    await streamer.start()
    text = ""
    for i in range(60):  # 60 tokens over ~0.6 s
        text += f"w{i} "
        streamer.update(text.strip())
        await asyncio.sleep(0.01)
    await streamer.finish(text.strip(), answer_id=7)
    edits = [t for kind, t in platform.calls if kind == "edit"]
    assert 2 <= len(edits) <= 6  # ~0.6 s at one edit per 0.2 s, plus the final edit
    gaps = [b - a for a, b in itertools.pairwise(edits[:-1])]
    assert all(gap >= 0.18 for gap in gaps)  # intermediate edits respect the interval
    assert platform.messages["1"] == text.strip()
    assert platform.finished == ("1", 7)


async def test_the_first_words_show_at_once_not_on_the_next_beat_of_the_clock() -> None:
    platform = PlatformLog(edit_interval=30.0)  # a clock so slow that only "at once" can pass
    streamer = ReplyStreamer(platform)
    await streamer.start()
    streamer.update(" ")  # a first token of white space is not words yet
    await asyncio.sleep(0.05)
    assert platform.messages["1"] == "…"
    streamer.update(" Hello")
    for _ in range(500):  # a few loop turns, however slow the machine; never the clock's 30 s
        if platform.messages["1"] != "…":
            break
        await asyncio.sleep(0.01)
    assert platform.messages["1"] == "Hello" + CURSOR  # shown without the model's leading space
    streamer.update(" Hello there")
    await asyncio.sleep(0.1)  # the next words wait for the clock
    assert platform.messages["1"] == "Hello" + CURSOR
    await streamer.finish(" Hello there", answer_id=1)
    assert platform.messages["1"] == " Hello there"


async def test_showing_the_first_words_at_once_costs_no_extra_edit() -> None:
    """Against a clock that starts at the placeholder (one edit per beat at most), the early
    first edit replaces the one the clock's first beat would have made."""
    platform = PlatformLog(max_chars=2000, edit_interval=0.2)
    streamer = ReplyStreamer(platform)
    await streamer.start()
    loop = asyncio.get_running_loop()
    started = platform.calls[0][1]
    text = ""
    while loop.time() - started < 0.7:
        text += "w "
        streamer.update(text)
        await asyncio.sleep(0.01)
    answered = loop.time() - started
    await streamer.finish(text, answer_id=1)
    edits = [t - started for kind, t in platform.calls[1:] if kind == "edit"]
    beats = int(answered / platform.edit_interval)  # the edits a placeholder-started clock makes
    assert edits[0] < 0.1, edits
    assert len(edits) - 1 <= beats, edits  # the final edit is the only one on top


async def test_long_answer_continues_in_new_messages() -> None:
    platform = PlatformLog(max_chars=100, edit_interval=0.01)
    streamer = ReplyStreamer(platform)
    await streamer.start()
    paragraphs = [f"Paragraph {i} says something useful about koalas." for i in range(6)]
    answer = "\n\n".join(paragraphs)
    for end in range(0, len(answer) + 1, 25):
        streamer.update(answer[:end])
        await asyncio.sleep(0.015)
    await streamer.finish(answer, answer_id=1)
    shown = list(platform.messages.values())
    assert len(shown) > 1
    assert all(len(m) <= 100 for m in shown)
    assert not any(CURSOR in m for m in shown)
    assert "\n\n".join(shown) == answer
    assert platform.finished == (str(len(shown)), 1)


async def test_failed_intermediate_edit_is_covered_and_final_edit_retried() -> None:
    platform = PlatformLog(edit_interval=0.01, fail_edits=2)
    streamer = ReplyStreamer(platform)
    await streamer.start()
    streamer.update("partial")
    await asyncio.sleep(0.05)
    await streamer.finish("partial and complete", answer_id=3)
    assert platform.messages["1"] == "partial and complete"


async def test_failure_turns_placeholder_into_notice_keeping_partial_text() -> None:
    platform = PlatformLog(edit_interval=0.01)
    streamer = ReplyStreamer(platform)
    await streamer.start()
    streamer.update("The largest animal is")
    await asyncio.sleep(0.03)
    await streamer.fail("The model stopped in the middle of its answer.", "The largest animal is")
    assert platform.messages["1"].startswith("The largest animal is")
    assert "stopped in the middle" in platform.messages["1"]
    assert platform.finished is None


@pytest.mark.parametrize("limit", [10, 31])
def test_tiny_limits_are_refused(limit: int) -> None:
    with pytest.raises(ValueError):
        split_message("x" * 100, limit)
