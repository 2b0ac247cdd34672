"""The fake Slack streams and validates like Slack's references say, proven with slack_sdk itself
(its own ``chat_stream`` helper too) and a real slack-bolt app receiving the clicks."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import FakeSlack

TEAM, ALICE = "T0KOALA", "U0ALICE"

FEEDBACK: dict[str, Any] = {
    "type": "context_actions",
    "elements": [
        {
            "type": "feedback_buttons",
            "action_id": "fb",
            "positive_button": {
                "text": {"type": "plain_text", "text": "👍"},
                "value": "up:7",
                "accessibility_label": "Good answer",
            },
            "negative_button": {"text": {"type": "plain_text", "text": "👎"}, "value": "down:7"},
        },
        {
            "type": "icon_button",
            "icon": "refresh",
            "text": {"type": "plain_text", "text": "🔄 Regenerate"},
            "action_id": "again",
            "value": "7",
        },
    ],
}


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(echo_bot_events=False) as fake:
        yield fake


def client(slack: FakeSlack, **kwargs: Any) -> AsyncWebClient:
    return AsyncWebClient(token=slack.bot_token, base_url=slack.api_url, **kwargs)


async def error_of(call: Any) -> str:
    with pytest.raises(SlackApiError) as refused:
        await call
    return str(refused.value.response["error"])


async def test_slack_sdks_chat_stream_helper_streams_a_reply_seen_like_a_posted_one(
    slack: FakeSlack,
) -> None:
    web = client(slack)
    root = await slack.user_posts("question", channel="C1")
    streamer = await web.chat_stream(
        channel="C1",
        thread_ts=root.ts,
        recipient_team_id=TEAM,
        recipient_user_id=ALICE,
        buffer_size=8,
    )
    for piece in ["Koalas ", "eat ", "leaves", "."]:
        await streamer.append(markdown_text=piece)
    (reply,) = slack.bot_replies("C1", root.ts)
    assert reply.streaming_state == "in_progress" and reply.text == "Koalas eat "
    await streamer.stop(blocks=[FEEDBACK])

    assert reply.streaming_state == "completed" and reply.shown == "Koalas eat leaves."
    assert [e["type"] for e in reply.context_actions] == ["feedback_buttons", "icon_button"]
    assert slack.final_answer("C1", root.ts) is reply
    replies = await web.conversations_replies(channel="C1", ts=root.ts)
    assert [m["ts"] for m in replies["messages"]] == [root.ts, reply.ts]
    assert replies["messages"][1]["text"] == "Koalas eat leaves."
    assert replies["messages"][1]["blocks"][0]["type"] == "context_actions"
    history = await web.conversations_history(channel="C1")
    assert [m["ts"] for m in history["messages"]] == [root.ts]  # replies stay in the thread
    shown = [text for _, _, ts, text in slack.timeline if ts == reply.ts]
    assert shown[0] == "Koalas eat ", "the first visible words are on the timeline"
    assert [c.method for c in slack.calls] == [
        "chat.startStream",  # at 8 buffered characters
        "chat.stopStream",  # with the rest
        "conversations.replies",
        "conversations.history",
    ]


async def test_channels_need_the_recipient_dms_do_not(slack: FakeSlack) -> None:
    web = client(slack)
    root = await slack.user_posts("q", channel="C1")
    no_team = web.chat_startStream(channel="C1", thread_ts=root.ts, recipient_user_id=ALICE)
    assert await error_of(no_team) == "missing_recipient_team_id"
    no_user = web.chat_startStream(channel="C1", thread_ts=root.ts, recipient_team_id=TEAM)
    assert await error_of(no_user) == "missing_recipient_user_id"
    assert await error_of(web.chat_startStream(channel="C1", thread_ts="")) == "invalid_arguments"
    dm = await slack.user_posts("q", channel="D0ALICE")
    started = await web.chat_startStream(channel="D0ALICE", thread_ts=dm.ts, markdown_text="hi")
    assert started["channel"] == "D0ALICE" and started["ts"]


async def test_a_stream_takes_text_only_while_it_streams(slack: FakeSlack) -> None:
    web = client(slack)
    dm = await slack.user_posts("q", channel="D1")
    ts = (await web.chat_startStream(channel="D1", thread_ts=dm.ts))["ts"]
    assert await error_of(
        web.chat_appendStream(channel="D1", ts="1.000001", markdown_text="x")
    ) == ("message_not_found")
    assert await error_of(web.chat_appendStream(channel="D1", ts=ts)) == "no_text"
    too_long = "x" * 12_001
    assert await error_of(web.chat_appendStream(channel="D1", ts=ts, markdown_text=too_long)) == (
        "invalid_arguments"
    )
    bad_chunk = [{"type": "poem", "text": "x"}]
    assert await error_of(web.chat_appendStream(channel="D1", ts=ts, chunks=bad_chunk)) == (
        "invalid_chunks"
    )
    await web.chat_appendStream(channel="D1", ts=ts, markdown_text="x" * 12_000)
    await web.chat_stopStream(channel="D1", ts=ts)
    again = web.chat_appendStream(channel="D1", ts=ts, markdown_text="late")
    assert await error_of(again) == "message_not_in_streaming_state"
    assert await error_of(web.chat_stopStream(channel="D1", ts=ts)) == (
        "message_not_in_streaming_state"
    )
    assert await error_of(web.chat_appendStream(channel="D1", ts=dm.ts, markdown_text="x")) == (
        "message_not_in_streaming_state"
    )  # a person's message is no stream


def broken(path: str, value: Any) -> dict[str, Any]:
    """FEEDBACK with one field (a dotted path; ``None`` deletes it) changed."""
    block = copy.deepcopy(FEEDBACK)
    *parents, last = path.split(".")
    node: Any = block
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is None:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return block


BAD_BLOCKS = {
    "no elements": broken("elements", []),
    "six elements": broken("elements", [FEEDBACK["elements"][1]] * 6),
    "a plain button": broken("elements.1.type", "button"),
    "same action_id twice": broken("elements.1.action_id", "fb"),
    "block_id over 255": broken("block_id", "b" * 256),
    "no negative button": broken("elements.0.negative_button", None),
    "mrkdwn button text": broken("elements.0.positive_button.text.type", "mrkdwn"),
    "button text over 75": broken("elements.0.positive_button.text.text", "👍" * 76),
    "no button value": broken("elements.0.negative_button.value", None),
    "value over 2000": broken("elements.0.negative_button.value", "v" * 2001),
    "label over 75": broken("elements.0.positive_button.accessibility_label", "l" * 76),
    "feedback action_id over 255": broken("elements.0.action_id", "a" * 256),
    "icon missing": broken("elements.1.icon", None),
    "icon text missing": broken("elements.1.text", None),
    "icon value over 2000": broken("elements.1.value", "v" * 2001),
    "icon visible to a non-list": broken("elements.1.visible_to_user_ids", "U1"),
}


@pytest.mark.parametrize("block", BAD_BLOCKS.values(), ids=BAD_BLOCKS.keys())
async def test_the_feedback_block_is_checked_as_documented(
    slack: FakeSlack, block: dict[str, Any]
) -> None:
    web = client(slack)
    dm = await slack.user_posts("q", channel="D1")
    ts = (await web.chat_startStream(channel="D1", thread_ts=dm.ts, markdown_text="a"))["ts"]
    assert await error_of(web.chat_stopStream(channel="D1", ts=ts, blocks=[block])) == (
        "invalid_blocks"
    )
    (reply,) = slack.bot_replies("D1", dm.ts)
    assert reply.streaming_state == "in_progress", "a refused stop leaves the stream open"
    await web.chat_stopStream(channel="D1", ts=ts, blocks=[FEEDBACK])
    assert reply.streaming_state == "completed"


async def test_feedback_elements_belong_in_context_actions_only(slack: FakeSlack) -> None:
    actions = {"type": "actions", "elements": [FEEDBACK["elements"][0]]}
    posting = client(slack).chat_postMessage(channel="C1", text="x", blocks=[actions])
    assert await error_of(posting) == "invalid_blocks"


async def test_an_icon_slack_does_not_know_is_refused_when_told(slack: FakeSlack) -> None:
    slack.icon_names = {"trash"}
    web = client(slack)
    dm = await slack.user_posts("q", channel="D1")
    ts = (await web.chat_startStream(channel="D1", thread_ts=dm.ts, markdown_text="a"))["ts"]
    assert await error_of(web.chat_stopStream(channel="D1", ts=ts, blocks=[FEEDBACK])) == (
        "invalid_blocks"
    )


@pytest.mark.parametrize(
    "error", ["channel_type_not_supported", "invalid_arguments", "missing_scope"]
)
async def test_slack_can_refuse_the_streaming_api(slack: FakeSlack, error: str) -> None:
    slack.refuse_streaming = error
    root = await slack.user_posts("q", channel="C1")
    start = client(slack).chat_startStream(
        channel="C1", thread_ts=root.ts, recipient_team_id=TEAM, recipient_user_id=ALICE
    )
    assert await error_of(start) == error
    assert slack.bot_replies("C1", root.ts) == []


async def test_append_stream_can_answer_429_with_retry_after(slack: FakeSlack) -> None:
    patient = client(slack, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)])
    dm = await slack.user_posts("q", channel="D1")
    ts = (await patient.chat_startStream(channel="D1", thread_ts=dm.ts, markdown_text="a"))["ts"]
    slack.rate_limit("chat.appendStream", times=1, retry_after=0)
    await patient.chat_appendStream(channel="D1", ts=ts, markdown_text="b")
    calls = slack.calls_to("chat.appendStream")
    assert [c.status for c in calls] == [429, 200]
    assert slack.bot_replies("D1", dm.ts)[0].text == "ab"


async def test_a_click_on_feedback_buttons_reaches_bolt_as_slack_sends_it(
    slack: FakeSlack,
) -> None:
    bolt = AsyncApp(client=client(slack), signing_secret=slack.signing_secret)
    clicks: list[dict[str, Any]] = []

    @bolt.action("fb")
    @bolt.action("again")
    async def on_click(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        clicks.append({"action": action, "message_ts": body["container"]["message_ts"]})

    runner = web.AppRunner(bolt.web_app(path="/slack/events"))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        slack.events_url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
        dm = await slack.user_posts("q", channel="D1", deliver=False)
        web_client = client(slack)
        ts = await web_client.chat_startStream(channel="D1", thread_ts=dm.ts, markdown_text="a")
        await web_client.chat_stopStream(channel="D1", ts=ts["ts"], blocks=[FEEDBACK])
        (reply,) = slack.bot_replies("D1", dm.ts)
        assert (await slack.click_feedback(reply, positive=False)).status == 200
        assert (await slack.click_icon(reply, "again")).status == 200
    finally:
        await runner.cleanup()

    down, again = (c["action"] for c in clicks)
    assert {c["message_ts"] for c in clicks} == {reply.ts}
    assert (down["type"], down["action_id"], down["value"]) == ("feedback_buttons", "fb", "down:7")
    assert down["text"] == {"type": "plain_text", "text": "👎"}
    assert (again["type"], again["icon"], again["value"]) == ("icon_button", "refresh", "7")
    assert down["block_id"] == reply.blocks[0]["block_id"] != ""
