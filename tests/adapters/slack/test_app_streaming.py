"""The Slack bot answering through Slack's streaming API (KOALABOT_SLACK_STREAMING=auto|on),
end to end: the real slack-bolt app and Engine against the fake Slack and TGI."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from koalabot.engine.engine import INTERRUPTED
from koalabot.events import ThreadKey
from koalabot_adapters.slack.buttons import ACTION_REGENERATE
from koalabot_adapters.slack.stream import SlackStream, parse_feedback_value
from tests.fakes.slack import FakeSlack, Message
from tests.fakes.tgi import FakeTGI
from tests.fixtures.slack import SlackBot, StartSlackBot

REPLY = (
    "Koalas eat eucalyptus leaves, about half a kilogram a day. The leaves are poor in "
    "energy, so koalas sleep up to twenty hours to save it."
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def mention(slack: FakeSlack, text: str) -> str:
    return f"<@{slack.bot_user_id}> {text}"


async def answer_to(slack: FakeSlack, root: Message, nth: int = 1) -> Message:
    """The ``nth`` finished answer in the thread of ``root`` (it has buttons of either kind)."""

    def done() -> Message | None:
        finished = [
            m for m in slack.bot_replies(root.channel, root.ts) if m.buttons or m.context_actions
        ]
        return finished[nth - 1] if len(finished) >= nth else None

    return await slack.wait_for(done)


async def streaming_bot(
    start: StartSlackBot, mode: str, *replies: str, **settings: Any
) -> SlackBot:
    """The bot with streaming on ``auto``, its model to say ``replies``."""
    bot = await start(mode, slack_streaming="auto", **settings)
    bot.tgi.replies.extend(replies)
    return bot


def answer_id_of(message: Message) -> int:
    (feedback,) = [e for e in message.context_actions if e["type"] == "feedback_buttons"]
    parsed = parse_feedback_value(feedback["positive_button"]["value"])
    assert parsed is not None
    return parsed[1]


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_channel_thread_answer_streams_and_its_feedback_buttons_vote(
    start_slack_bot: StartSlackBot, mode: str
) -> None:
    bot = await start_slack_bot(mode, slack_streaming="auto")
    slack, repo = bot.slack, bot.engine.repo
    bot.tgi.replies.append(REPLY)
    bot.tgi.token_delay = 0.01  # slow enough for several appends 0.03 s apart

    root = await slack.user_posts(mention(slack, "what do koalas eat?"))
    answer = await answer_to(slack, root)

    assert answer.shown == REPLY and answer.streaming_state == "completed"
    (start,) = slack.calls_to("chat.startStream")
    assert start.args["recipient_team_id"] == slack.team_id
    assert start.args["recipient_user_id"] == "U0ALICE"
    assert len(slack.calls_to("chat.appendStream")) >= 2, "the answer streams in"
    assert slack.calls_to("chat.update") == [] and slack.calls_to("chat.postMessage") == []
    kinds = [e["type"] for e in answer.context_actions]
    assert kinds == ["feedback_buttons", "icon_button"]
    answer_id = answer_id_of(answer)

    await slack.click_feedback(answer, positive=True, user="U0ALICE")
    await slack.wait_for(lambda: len(slack.ephemerals) == 1)
    assert await repo.votes(answer_id) == {"U0ALICE": 1}
    await slack.click_feedback(answer, positive=False, user="U0ALICE")  # a changed vote
    await slack.user_reacts(answer, "+1", user="U0BOB")  # reactions still count
    await slack.wait_for(lambda: len(slack.ephemerals) == 3)
    assert await repo.votes(answer_id) == {"U0ALICE": -1, "U0BOB": 1}
    assert slack.ephemerals[0].thread_ts == root.ts
    await slack.settle()
    assert all(delivery.status == 200 for _, delivery in slack.deliveries)


async def test_the_regenerate_icon_streams_another_answer_that_can_be_voted_on(
    start_slack_bot: StartSlackBot,
) -> None:
    bot = await streaming_bot(start_slack_bot, "http", REPLY, "Mostly eucalyptus.")
    slack, repo = bot.slack, bot.engine.repo
    root = await slack.user_posts(mention(slack, "what do koalas eat?"))
    first = await answer_to(slack, root)

    await slack.click_icon(first, ACTION_REGENERATE, user="U0BOB")
    second = await answer_to(slack, root, nth=2)
    await slack.click_feedback(second, positive=True, user="U0BOB")
    await slack.wait_for(lambda: slack.ephemerals)

    assert second.shown == "Mostly eucalyptus." and second.streaming_state == "completed"
    assert slack.calls_to("chat.startStream")[1].args["recipient_user_id"] == "U0BOB"
    assert bot.tgi.prompts[1] == bot.tgi.prompts[0]
    first_id, second_id = answer_id_of(first), answer_id_of(second)
    assert (await repo.votes(first_id), await repo.votes(second_id)) == ({}, {"U0BOB": 1})


async def test_an_assistant_view_answer_streams_without_recipients(
    start_slack_bot: StartSlackBot,
) -> None:
    bot = await streaming_bot(start_slack_bot, "socket", REPLY)
    slack = bot.slack
    thread = await slack.start_assistant_thread(user="U0ALICE")
    await slack.wait_for(lambda: slack.suggested_prompts)

    await slack.user_posts("what do koalas eat?", channel=thread.channel, thread_ts=thread.ts)
    answer = await answer_to(slack, thread)

    assert answer.shown == REPLY and answer.streaming_state == "completed"
    (start,) = slack.calls_to("chat.startStream")
    assert "recipient_user_id" not in start.args
    assert [e["type"] for e in answer.context_actions] == ["feedback_buttons", "icon_button"]
    assert [s for c, t, s in slack.statuses if (c, t) == (thread.channel, thread.ts)][-1] == ""


async def test_where_slack_refuses_streaming_answers_are_edited_and_the_log_says_why_once(
    start_slack_bot: StartSlackBot, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await start_slack_bot("http", slack_streaming="auto")
    slack = bot.slack
    slack.refuse_streaming = "missing_scope"  # an install without the streaming scope
    bot.tgi.replies.extend([REPLY, "They drink a little water."])

    with caplog.at_level(logging.INFO, logger="koalabot_adapters.slack"):
        root = await slack.user_posts(mention(slack, "what do koalas eat?"))
        first = await answer_to(slack, root)
        await slack.user_posts("do they drink?", thread_ts=root.ts)
        second = await answer_to(slack, root, nth=2)

    assert (first.shown, second.shown) == (REPLY, "They drink a little water.")
    assert first.buttons and second.buttons, "the classic button row under edited answers"
    assert len(slack.calls_to("chat.startStream")) == 1, "auto does not ask again in a channel"
    told = [r.getMessage() for r in caplog.records if "missing_scope" in r.getMessage()]
    assert len(told) == 1 and "chat.update" in told[0]
    assert "Koalas" not in caplog.text


async def test_streaming_on_tries_every_answer_and_off_never_streams(
    start_slack_bot: StartSlackBot,
) -> None:
    bot = await start_slack_bot("http", slack_streaming="on")
    slack = bot.slack
    slack.refuse_streaming = "channel_type_not_supported"
    bot.tgi.replies.extend([REPLY, REPLY])
    root = await slack.user_posts(mention(slack, "what do koalas eat?"))
    await answer_to(slack, root)
    await slack.user_posts("again?", thread_ts=root.ts)
    await answer_to(slack, root, nth=2)
    assert len(slack.calls_to("chat.startStream")) == 2

    await bot.adapter.stop()
    off = await start_slack_bot("http", slack_streaming="off")
    slack.refuse_streaming = None
    off.tgi.replies.append(REPLY)
    other = await slack.user_posts(mention(slack, "and pandas?"))
    assert (await answer_to(slack, other)).buttons
    assert len(slack.calls_to("chat.startStream")) == 2


async def test_a_long_answer_streams_on_in_new_messages_split_at_paragraphs_not_in_fences(
    start_slack_bot: StartSlackBot, fake_tgi: FakeTGI
) -> None:
    fake_tgi.max_total_tokens = 20_000  # room for an answer of several streamed messages
    bot = await start_slack_bot("socket", slack_streaming="auto", max_new_tokens=12_000)
    slack = bot.slack
    code = "```python\n" + "".join(f"eat({i})\n" for i in range(300)) + "```"
    paragraphs = [f"Paragraph {i}: " + "koalas are marsupials. " * 60 for i in range(12)]
    paragraphs.insert(6, code)
    text = "\n\n".join(paragraphs)
    bot.tgi.replies.append(text)
    bot.tgi.token_delay = 0.0

    root = await slack.user_posts(mention(slack, "tell me everything about koalas"))
    answer = await answer_to(slack, root)

    parts = slack.bot_replies(root.channel, root.ts)
    assert len(parts) >= 2 and parts[-1] is answer
    assert {p.streaming_state for p in parts} == {"completed"}, "every part streamed and stopped"
    assert [m for m in parts if m.context_actions] == [answer]
    assert all(len(p.shown) <= 10_000 and p.shown.count("```") % 2 == 0 for p in parts)
    assert " ".join(p.shown for p in parts).split() == text.split()
    await slack.user_reacts(parts[0], "+1", user="U0BOB")  # every part of the answer is its own
    await slack.wait_for(lambda: slack.ephemerals)
    assert await bot.engine.repo.votes(answer_id_of(answer)) == {"U0BOB": 1}


async def test_a_429_on_append_is_waited_out_and_the_text_stays_in_order(
    start_slack_bot: StartSlackBot,
) -> None:
    bot = await streaming_bot(start_slack_bot, "http", REPLY)
    slack = bot.slack
    bot.tgi.token_delay = 0.01
    slack.rate_limit("chat.appendStream", times=1, retry_after=1)

    root = await slack.user_posts(mention(slack, "what do koalas eat?"))
    answer = await answer_to(slack, root)

    assert answer.shown == REPLY
    assert all(REPLY.startswith(shown) for shown in answer.edits), "the text grew in order"
    statuses = [c.status for c in slack.calls_to("chat.appendStream")]
    assert statuses[0] == 429 and statuses[1] == 200


async def test_after_a_restart_a_stream_left_open_is_stopped_with_the_notice(
    start_slack_bot: StartSlackBot,
) -> None:
    bot = await start_slack_bot("http", slack_streaming="auto")
    slack = bot.slack
    root = await slack.user_posts("tell me a story")  # not to the bot: nothing else answers
    assert bot.adapter.client is not None
    crashed = SlackStream(
        bot.adapter.client,
        root.channel,
        root.ts,
        recipient_team_id=slack.team_id,
        recipient_user_id="U0ALICE",
    )
    await crashed.append("Once upon a time")  # then the process died
    (reply,) = slack.bot_replies(root.channel, root.ts)
    where = ThreadKey("slack", slack.team_id, root.channel, root.ts)

    await bot.adapter.sink_for(where).edit(reply.ts, f"⚠️ {INTERRUPTED}")

    assert reply.shown == f"Once upon a time\n\n⚠️ {INTERRUPTED}"
    assert reply.streaming_state == "completed"


async def test_a_stream_gone_midway_goes_on_by_chat_update_without_losing_text(
    start_slack_bot: StartSlackBot,
) -> None:
    bot = await streaming_bot(start_slack_bot, "http", REPLY)
    slack = bot.slack
    bot.tgi.token_delay = 0.02
    root = await slack.user_posts(mention(slack, "what do koalas eat?"))

    def streaming() -> Message | None:
        replies = slack.bot_replies(root.channel, root.ts)
        return replies[0] if replies and replies[0].text else None

    reply = await slack.wait_for(streaming)
    reply.streaming_state = "completed"  # Slack ended the stream (a timeout on its side)
    answer = await answer_to(slack, root)

    assert answer is reply and answer.shown == REPLY
    assert answer.buttons, "finished on the chat.update path, with the classic buttons"
    assert slack.calls_to("chat.update"), "the rest came by chat.update"
    statuses = [c.response.get("error") for c in slack.calls_to("chat.appendStream")]
    assert "message_not_in_streaming_state" in statuses
