"""An answer streamed with Slack's streaming API: the real slack_sdk client against the fake Slack
over its socket, as a person in the thread would see it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from koalabot.engine.streaming import split_message
from koalabot_adapters.slack.buttons import ACTION_REGENERATE
from koalabot_adapters.slack.stream import (
    ACTION_FEEDBACK,
    SlackStream,
    StreamRefused,
    parse_feedback_value,
    stop_interrupted,
)
from tests.fakes.slack import FakeSlack, Message

ANSWER = "Koalas eat eucalyptus leaves, about half a kilogram a day. They sleep a lot."


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(echo_bot_events=False) as fake:
        yield fake


def client(slack: FakeSlack, retries: int = 0) -> AsyncWebClient:
    handlers = [AsyncRateLimitErrorRetryHandler(max_retry_count=retries)] if retries else []
    return AsyncWebClient(token=slack.bot_token, base_url=slack.api_url, retry_handlers=handlers)


def stream(slack: FakeSlack, root: Message, retries: int = 0, **kwargs: Any) -> SlackStream:
    return SlackStream(
        client(slack, retries),
        root.channel,
        root.ts,
        recipient_team_id=slack.team_id,
        recipient_user_id=root.user,
        **kwargs,
    )


def words(text: str, size: int = 7) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


async def test_an_answer_streams_in_and_ends_with_feedback_buttons(slack: FakeSlack) -> None:
    root = await slack.user_posts("what do koalas eat?", channel="C1")
    answer = stream(slack, root, buffer_size=20, interval=60)
    for delta in words(ANSWER):
        await answer.append(delta)
    await answer.finish(42)

    (reply,) = slack.bot_replies("C1", root.ts)
    assert slack.final_answer("C1", root.ts) is reply
    assert reply.shown == ANSWER and reply.thread_ts == root.ts
    assert reply.streaming_state == "completed"
    shown = [text for _, _, ts, text in slack.timeline if ts == reply.ts]
    assert shown[0] == "Koalas ", "the first words show at once, not after a buffer's worth"
    assert len(shown) >= 3, "the answer grows in several appends"
    methods = [c.method for c in slack.calls]
    assert methods[0] == "chat.startStream" and methods[-1] == "chat.stopStream"
    assert set(methods[1:-1]) == {"chat.appendStream"}
    assert len(methods) == answer.calls < len(words(ANSWER)), "deltas are buffered"
    start = slack.calls[0].args
    assert (start["recipient_team_id"], start["recipient_user_id"]) == (slack.team_id, root.user)

    feedback, regenerate = reply.context_actions
    values = feedback["positive_button"]["value"], feedback["negative_button"]["value"]
    assert [parse_feedback_value(v) for v in values] == [(1, 42), (-1, 42)]
    assert feedback["action_id"] == ACTION_FEEDBACK
    assert (regenerate["type"], regenerate["action_id"], regenerate["value"]) == (
        "icon_button",
        ACTION_REGENERATE,
        "42",
    )


async def test_model_text_cannot_ping_the_channel(slack: FakeSlack) -> None:
    root = await slack.user_posts("q", channel="D0ALICE")
    answer = stream(slack, root)
    await answer.append("<!channel> & you")
    await answer.finish(1)
    (reply,) = slack.bot_replies("D0ALICE", root.ts)
    assert reply.text == "&lt;!channel&gt; &amp; you" and reply.shown == "<!channel> & you"


async def test_a_429_on_append_waits_and_keeps_the_text_in_order(slack: FakeSlack) -> None:
    root = await slack.user_posts("q", channel="C1")
    answer = stream(slack, root, retries=2, buffer_size=10, interval=60)
    await answer.append("First. ")
    slack.rate_limit("chat.appendStream", times=2, retry_after=0)
    for delta in words("Second sentence. Third one. Fourth and last."):
        await answer.append(delta)
    await answer.finish(3)

    (reply,) = slack.bot_replies("C1", root.ts)
    assert reply.shown == "First. Second sentence. Third one. Fourth and last."
    statuses = [c.status for c in slack.calls_to("chat.appendStream")]
    assert statuses[:3] == [429, 429, 200]


async def test_a_429_past_the_clients_retries_keeps_the_text_for_the_next_flush(
    slack: FakeSlack,
) -> None:
    root = await slack.user_posts("q", channel="C1")
    answer = stream(slack, root, buffer_size=5, interval=60)
    await answer.append("One. ")
    slack.rate_limit("chat.appendStream", times=1, retry_after=0)
    await answer.append("Two. ")  # refused with 429: kept
    await answer.append("Three.")
    await answer.finish(4)
    (reply,) = slack.bot_replies("C1", root.ts)
    assert reply.shown == "One. Two. Three."
    assert [c.status for c in slack.calls_to("chat.appendStream")] == [429, 200]


async def test_a_refused_stream_raises_with_every_word_for_the_fallback(slack: FakeSlack) -> None:
    slack.refuse_streaming = "channel_type_not_supported"
    root = await slack.user_posts("q", channel="C1")
    answer = stream(slack, root)
    with pytest.raises(StreamRefused) as refused:
        await answer.append("Hello there")
    assert (refused.value.error, refused.value.ts) == ("channel_type_not_supported", None)
    assert refused.value.text == "Hello there" and refused.value.message_ids == []
    assert not refused.value.passing, "this surface does not stream: the next answer edits"
    assert slack.bot_replies("C1", root.ts) == []


async def test_a_stream_gone_midway_raises_with_its_message_and_whole_text(
    slack: FakeSlack,
) -> None:
    root = await slack.user_posts("q", channel="C1")
    answer = stream(slack, root, buffer_size=1)
    await answer.append("Part one. ")
    (reply,) = slack.bot_replies("C1", root.ts)
    reply.streaming_state = "completed"  # Slack ended the stream on its side
    with pytest.raises(StreamRefused) as refused:
        await answer.append("Part two.")
    assert refused.value.error == "message_not_in_streaming_state"
    assert (refused.value.ts, refused.value.text) == (reply.ts, "Part one. Part two.")
    assert refused.value.message_ids == [reply.ts] and refused.value.passing
    # the fallback can show it all with chat.update
    await answer.client.chat_update(channel="C1", ts=reply.ts, text=refused.value.text)
    assert reply.shown == "Part one. Part two."


async def test_a_long_answer_goes_on_in_new_messages_at_paragraphs_never_in_a_fence(
    slack: FakeSlack,
) -> None:
    prose = "Koalas sleep most of the day in the forks of trees. " * 6
    code = "```python\n" + "".join(f"leaves_{n} = eat(tree_{n})\n" for n in range(40)) + "```"
    long = "\n\n".join([prose, prose, code, prose, prose, prose])
    root = await slack.user_posts("q", channel="C1")
    answer = stream(slack, root, buffer_size=30, interval=60, max_chars=600)
    for delta in words(long, 11):
        await answer.append(delta)
    await answer.finish(5)

    replies = slack.bot_replies("C1", root.ts)
    assert [m.text for m in replies] == split_message(long, 600)
    assert len(replies) >= 4 and all(len(m.text) <= 600 for m in replies)
    assert all(m.text.count("```") % 2 == 0 for m in replies), "every fence is closed"
    assert [bool(m.context_actions) for m in replies] == [False] * (len(replies) - 1) + [True]
    assert all(m.streaming_state == "completed" for m in replies)
    assert answer.message_ids == [m.ts for m in replies]


async def test_an_interrupted_answer_ends_with_a_notice_and_no_buttons(slack: FakeSlack) -> None:
    root = await slack.user_posts("q", channel="C1")
    answer = stream(slack, root)
    await answer.append("Koalas eat")
    await answer.interrupt("The answer was interrupted.")
    (reply,) = slack.bot_replies("C1", root.ts)
    assert reply.shown == "Koalas eat\n\n⚠️ The answer was interrupted."
    assert reply.streaming_state == "completed" and reply.context_actions == []


async def test_where_slack_takes_no_such_icon_regenerate_is_a_classic_button(
    slack: FakeSlack,
) -> None:
    slack.icon_names = {"trash"}
    root = await slack.user_posts("q", channel="C1")
    answer = stream(slack, root)
    await answer.append(ANSWER)
    await answer.finish(9)
    (reply,) = slack.bot_replies("C1", root.ts)
    assert reply.shown == ANSWER and reply.streaming_state == "completed"
    assert [e["type"] for e in reply.context_actions] == ["feedback_buttons"]
    assert [(b["action_id"], b["value"]) for b in reply.buttons] == [(ACTION_REGENERATE, "9")]
    assert [c.status for c in slack.calls_to("chat.stopStream")] == [200, 200]


async def test_a_burst_of_text_is_sent_in_pieces_slack_takes(slack: FakeSlack) -> None:
    burst = "a < b & c > d.\n\n" * 2_000  # 32,000 characters, each piece escaped to 12,000 or less
    root = await slack.user_posts("q", channel="D0ALICE")
    answer = stream(slack, root)
    await answer.append(burst)
    await answer.finish(6)
    replies = slack.bot_replies("D0ALICE", root.ts)
    assert [m.shown for m in replies] == split_message(burst, 10_000)
    assert all(c.response["ok"] for c in slack.calls), [c.response for c in slack.calls]
    assert [bool(m.context_actions) for m in replies] == [False] * (len(replies) - 1) + [True]


async def test_after_a_crash_an_open_stream_is_stopped_with_the_notice(slack: FakeSlack) -> None:
    root = await slack.user_posts("q", channel="C1")
    await stream(slack, root).append("Koalas eat")  # then the process dies
    (reply,) = slack.bot_replies("C1", root.ts)
    web = client(slack)
    assert await stop_interrupted(web, "C1", reply.ts, "The answer was interrupted.")
    assert reply.shown == "Koalas eat\n\n⚠️ The answer was interrupted."
    assert reply.streaming_state == "completed"
    assert not await stop_interrupted(web, "C1", reply.ts, "again"), "already stopped: update it"


async def test_a_clock_flushing_beside_the_token_loop_keeps_the_order(slack: FakeSlack) -> None:
    root = await slack.user_posts("q", channel="C1")
    answer = stream(slack, root, buffer_size=3, interval=0)

    done = asyncio.Event()

    async def clock() -> None:
        while not done.is_set():
            await answer.flush()
            await asyncio.sleep(0)

    async def tokens() -> None:
        for delta in words(ANSWER, 3):
            await answer.append(delta)
            await asyncio.sleep(0)
        done.set()

    await asyncio.gather(clock(), tokens())
    await answer.finish(8)
    (reply,) = slack.bot_replies("C1", root.ts)
    assert reply.shown == ANSWER


async def test_the_assistant_view_streams_without_recipient_ids(slack: FakeSlack) -> None:
    root = await slack.start_assistant_thread()  # a DM thread: Slack needs no recipient there
    answer = SlackStream(client(slack), root.channel, root.ts)
    await answer.append(ANSWER)
    await answer.finish(11)
    reply = slack.final_answer(root.channel, root.ts)
    assert reply is not None and reply.shown == ANSWER
    assert "recipient_user_id" not in slack.calls_to("chat.startStream")[0].args
