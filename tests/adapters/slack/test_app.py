"""The Slack bot end to end: the real slack-bolt app and Engine against the fake Slack and TGI,
in HTTP mode and in Socket Mode, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import make_url

from koalabot.events import ThreadKey
from koalabot_adapters.slack.buttons import ACTION_DOWN, ACTION_REGENERATE, ACTION_UP
from tests.fakes.slack import FakeSlack, Message
from tests.fakes.tgi import Fault
from tests.fixtures.db import eventually, write_locked
from tests.fixtures.slack import SlackBot, StartSlackBot

REPLY = (
    "Koalas eat eucalyptus leaves, about half a kilogram a day. The leaves are poor in "
    "energy, so koalas sleep up to twenty hours to save it."
)


def mention(slack: FakeSlack, text: str) -> str:
    return f"<@{slack.bot_user_id}> {text}"


async def answer_to(slack: FakeSlack, root: Message, nth: int = 1) -> Message:
    """Wait for the ``nth`` finished answer (it has buttons) in the thread of ``root``."""

    def done() -> Message | None:
        finished = [m for m in slack.bot_replies(root.channel, root.ts) if m.buttons]
        return finished[nth - 1] if len(finished) >= nth else None

    return await slack.wait_for(done)


async def test_a_mention_gets_a_threaded_streamed_answer_with_buttons(slack_bot: SlackBot) -> None:
    slack, tgi = slack_bot.slack, slack_bot.tgi
    tgi.replies.append(REPLY)
    tgi.token_delay = 0.01  # slow enough for several edits 0.03 s apart

    root = await slack.user_posts(mention(slack, "what do koalas eat?"))
    answer = await answer_to(slack, root)

    assert answer.thread_ts == root.ts
    assert answer.shown == REPLY
    assert len(answer.edits) >= 3, "the answer should stream in several chat.update calls"
    assert answer.edits[0] != answer.edits[-1]
    assert [b["action_id"] for b in answer.buttons] == [ACTION_UP, ACTION_DOWN, ACTION_REGENERATE]
    assert len({b["value"] for b in answer.buttons}) == 1
    (prompt,) = tgi.prompts
    assert "USER: what do koalas eat? GPT:" in prompt and "<@" not in prompt
    await slack.settle()  # the bot's own posts and edits came back as events: no second answer
    assert len(tgi.prompts) == 1
    assert len(slack.bot_replies(root.channel, root.ts)) == 1
    assert all(delivery.status == 200 for _, delivery in slack.deliveries)  # all acked
    where = ThreadKey("slack", slack.team_id, root.channel, root.ts)
    assert await slack_bot.engine.knows_thread(where)


async def test_a_follow_up_in_the_thread_needs_no_mention_and_keeps_the_memory(
    slack_bot: SlackBot,
) -> None:
    slack, tgi = slack_bot.slack, slack_bot.tgi
    tgi.replies.extend([REPLY, "Yes: they also drink a little water."])
    root = await slack.user_posts(mention(slack, "what do koalas eat?"))
    await answer_to(slack, root)

    await slack.user_posts("do they drink?", thread_ts=root.ts)
    second = await answer_to(slack, root, nth=2)

    assert second.shown == "Yes: they also drink a little water."
    assert REPLY in tgi.prompts[1] and "what do koalas eat?" in tgi.prompts[1]
    assert tgi.prompts[1].endswith("USER: do they drink? GPT:")

    # A mention inside the thread arrives as both `message` and `app_mention`: one answer.
    await slack.user_posts(mention(slack, "thanks!"), thread_ts=root.ts)
    await answer_to(slack, root, nth=3)

    # Other bots, edits and deletions in the thread are not messages to answer.
    other_bot = Message(root.channel, slack.new_ts(), "U0OTHERBOT", "beep", thread_ts=root.ts)
    event = slack.message_event(other_bot) | {"subtype": "bot_message", "bot_id": "B0OTHER"}
    deleted = {
        "type": "message",
        "subtype": "message_deleted",
        "hidden": True,
        "channel": root.channel,
        "ts": slack.new_ts(),
        "deleted_ts": root.ts,
        "channel_type": "channel",
        "previous_message": {"ts": root.ts, "user": "U0ALICE", "text": "what do koalas eat?"},
    }
    assert (await slack.deliver_event(event)).status == 200
    assert (await slack.deliver_event(deleted)).status == 200
    await slack.settle()
    assert len(tgi.prompts) == 3
    assert len(slack.bot_replies(root.channel, root.ts)) == 3


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the store is incidental
async def test_people_talking_among_themselves_are_left_alone_but_dms_are_answered(
    slack_bot: SlackBot,
) -> None:
    slack, tgi = slack_bot.slack, slack_bot.tgi
    people = await slack.user_posts("lunch anyone?")
    await slack.user_posts("sure", thread_ts=people.ts, user="U0BOB")
    dm = await slack.user_posts("hello koala", channel="D0ALICE")  # a DM needs no mention
    await answer_to(slack, dm)
    await slack.user_posts("and koalas?", channel="D0ALICE", thread_ts=dm.ts)
    await answer_to(slack, dm, nth=2)

    assert slack.bot_replies(people.channel, people.ts) == []
    assert len(tgi.prompts) == 2 and "hello koala" in tgi.prompts[1]


async def test_a_retried_delivery_is_answered_once(slack_bot: SlackBot) -> None:
    slack, tgi = slack_bot.slack, slack_bot.tgi
    tgi.token_delay = 0.015
    tgi.replies.append(REPLY)
    root = await slack.user_posts(mention(slack, "what do koalas eat?"))
    first_delivery = next(b for b, _ in slack.deliveries if b["event"]["type"] == "app_mention")

    await slack.wait_for(lambda: any(m.edits for m in slack.bot_replies(root.channel, root.ts)))
    while_streaming = await slack.redeliver(first_delivery, retry_num=1)
    await answer_to(slack, root)
    after_answering = await slack.redeliver(first_delivery, retry_num=2)
    await slack.settle()

    assert while_streaming.status == after_answering.status == 200
    assert len(tgi.prompts) == 1
    assert len(slack.bot_replies(root.channel, root.ts)) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_http_requests_not_signed_by_slack_get_401_and_nothing_is_stored(
    start_slack_bot: StartSlackBot,
) -> None:
    bot = await start_slack_bot("http")
    slack = bot.slack
    msg = await slack.user_posts(mention(slack, "hi"), deliver=False)
    raw = json.dumps(slack.event_body(slack.mention_event(msg))).encode()
    where = ThreadKey("slack", slack.team_id, msg.channel, msg.ts)

    forged = await slack.post_signed(raw, secret="not-the-signing-secret")
    stale = await slack.post_signed(raw, timestamp=int(time.time()) - 6 * 60)

    assert (forged.status, stale.status) == (401, 401)
    assert not await bot.engine.knows_thread(where)
    assert slack.calls_to("chat.postMessage") == []
    assert (await slack.post_signed(raw)).status == 200  # the same body, signed properly
    await answer_to(slack, msg)
    assert await bot.engine.knows_thread(where)


async def test_button_and_reaction_votes_land_in_the_store(slack_bot: SlackBot) -> None:
    slack, repo = slack_bot.slack, slack_bot.engine.repo
    slack_bot.tgi.replies.append(REPLY)
    root = await slack.user_posts(mention(slack, "what do koalas eat?"))
    answer = await answer_to(slack, root)
    answer_id = int(answer.buttons[0]["value"])

    await slack.click(answer, ACTION_UP, user="U0ALICE")
    await slack.wait_for(lambda: len(slack.ephemerals) == 1)
    assert await repo.votes(answer_id) == {"U0ALICE": 1}

    await slack.click(answer, ACTION_DOWN, user="U0ALICE")  # a changed vote replaces the old
    await slack.wait_for(lambda: len(slack.ephemerals) == 2)
    await slack.user_reacts(answer, "thumbsup::skin-tone-2", user="U0BOB")
    await slack.wait_for(lambda: len(slack.ephemerals) == 3)
    assert await repo.votes(answer_id) == {"U0ALICE": -1, "U0BOB": 1}

    await slack.user_reacts(answer, "+1", user=slack.bot_user_id)  # the bot's own: never counts
    await slack.user_reacts(root, "+1", user="U0CAROL")  # not an answer
    await slack.user_reacts(answer, "thumbsup::skin-tone-2", user="U0BOB", removed=True)
    await slack.wait_for(lambda: len(slack.ephemerals) == 4)
    assert await repo.votes(answer_id) == {"U0ALICE": -1}

    notes = [(e.user, e.channel, e.thread_ts, e.text) for e in slack.ephemerals]
    assert [user for user, *_ in notes] == ["U0ALICE", "U0ALICE", "U0BOB", "U0BOB"]
    assert all(channel == root.channel for _, channel, _, _ in notes)
    assert notes[0][2] == root.ts, "a button's acknowledgement shows in the answer's thread"
    assert "👍" in notes[0][3] and "👎" in notes[1][3] and "removed" in notes[3][3]
    assert all(delivery.status == 200 for _, delivery in slack.deliveries)  # none unhandled


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the store is incidental
async def test_other_bots_reactions_are_not_votes(slack_bot: SlackBot) -> None:
    slack, repo = slack_bot.slack, slack_bot.engine.repo
    slack.bot_users.add("U0OTHERBOT")
    slack_bot.tgi.replies.append(REPLY)
    root = await slack.user_posts(mention(slack, "what do koalas eat?"))
    answer = await answer_to(slack, root)
    answer_id = int(answer.buttons[0]["value"])

    await slack.user_reacts(answer, "+1", user="U0OTHERBOT")  # an app that thumbs everything
    await slack.user_reacts(answer, "-1", user="U0BOB")
    await slack.wait_for(lambda: len(slack.ephemerals) == 1)
    await slack.user_reacts(answer, "+1", user="U0OTHERBOT", removed=True)
    await slack.user_reacts(answer, "-1", user="U0BOB", removed=True)
    await slack.wait_for(lambda: len(slack.ephemerals) == 2)

    asked = [call.args.get("user") for call in slack.calls_to("users.info")]
    assert asked == ["U0OTHERBOT", "U0BOB"], "each user is asked about once"
    assert [e.user for e in slack.ephemerals] == ["U0BOB", "U0BOB"], "the bot gets no notes"
    assert await repo.votes(answer_id) == {}
    await slack.user_reacts(answer, "+1", user="U0OTHERBOT")
    await slack.user_reacts(answer, "+1", user="U0BOB")
    await slack.wait_for(lambda: len(slack.ephemerals) == 3)
    assert await repo.votes(answer_id) == {"U0BOB": 1}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # a SQLite file is locked
async def test_a_vote_the_database_cannot_take_is_kept_and_recorded_once_it_can(
    start_slack_bot: StartSlackBot, database_url: str
) -> None:
    bot = await start_slack_bot("http", spool_retry_interval=0.05)
    slack, repo = bot.slack, bot.engine.repo
    bot.tgi.replies.append(REPLY)
    root = await slack.user_posts(mention(slack, "what do koalas eat?"))
    answer = await answer_to(slack, root)
    answer_id = int(answer.buttons[0]["value"])

    with write_locked(Path(make_url(database_url).database or "")):
        await slack.click(answer, ACTION_UP, user="U0ALICE")
        await slack.wait_for(lambda: slack.ephemerals, within=20)
        assert await repo.votes(answer_id) == {}
    await eventually(lambda: repo.votes(answer_id), {"U0ALICE": 1})

    (note,) = slack.ephemerals
    assert (note.user, note.thread_ts) == ("U0ALICE", root.ts)
    assert note.text == (
        "Thanks! My database is away for a moment: I'll record your 👍 as soon as it is back."
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the store is incidental
async def test_without_users_read_reactions_count_and_the_log_names_the_scope(
    slack_bot: SlackBot, caplog: pytest.LogCaptureFixture
) -> None:
    slack, repo = slack_bot.slack, slack_bot.engine.repo
    slack.missing_scopes.add("users:read")  # an install from before the scope was asked for
    slack_bot.tgi.replies.append(REPLY)
    root = await slack.user_posts(mention(slack, "what do koalas eat?"))
    answer = await answer_to(slack, root)
    answer_id = int(answer.buttons[0]["value"])

    with caplog.at_level("WARNING", logger="koalabot_adapters.slack.users"):
        await slack.user_reacts(answer, "+1", user="U0ALICE")
        await slack.user_reacts(answer, "+1", user="U0BOB")
        await slack.wait_for(lambda: len(slack.ephemerals) == 2)

    assert await repo.votes(answer_id) == {"U0ALICE": 1, "U0BOB": 1}
    assert len(slack.calls_to("users.info")) == 1, "a missing scope is not asked about again"
    assert [r.getMessage() for r in caplog.records if "users:read" in r.getMessage()]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the store is incidental
async def test_regenerate_posts_another_answer_that_can_be_voted_on(slack_bot: SlackBot) -> None:
    slack, tgi, repo = slack_bot.slack, slack_bot.tgi, slack_bot.engine.repo
    tgi.replies.extend([REPLY, "Mostly eucalyptus, and sometimes other trees' leaves."])
    root = await slack.user_posts(mention(slack, "what do koalas eat?"))
    first = await answer_to(slack, root)

    await slack.click(first, ACTION_REGENERATE)
    second = await answer_to(slack, root, nth=2)
    await slack.click(second, ACTION_UP)
    await slack.wait_for(lambda: slack.ephemerals)

    assert second.shown == "Mostly eucalyptus, and sometimes other trees' leaves."
    assert tgi.prompts[1] == tgi.prompts[0]  # the same question, asked again
    first_id, second_id = int(first.buttons[0]["value"]), int(second.buttons[0]["value"])
    assert first_id != second_id
    assert (await repo.votes(first_id), await repo.votes(second_id)) == ({}, {"U0ALICE": 1})


async def test_a_429_on_chat_update_is_waited_out_and_the_final_text_arrives(
    slack_bot: SlackBot,
) -> None:
    slack, tgi = slack_bot.slack, slack_bot.tgi
    tgi.replies.append(REPLY)
    slack.rate_limit("chat.update", times=1, retry_after=1)

    root = await slack.user_posts(mention(slack, "what do koalas eat?"))
    answer = await answer_to(slack, root)

    assert answer.shown == REPLY
    statuses = [c.status for c in slack.calls_to("chat.update")]
    assert statuses[0] == 429 and statuses[-1] == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the store is incidental
async def test_a_long_answer_continues_in_a_new_message_in_the_thread(
    start_slack_bot: StartSlackBot,
) -> None:
    bot = await start_slack_bot("socket", max_new_tokens=1500)
    slack, tgi = bot.slack, bot.tgi
    paragraphs = [f"Paragraph {i}: " + "koalas are marsupials. " * 20 for i in range(8)]
    tgi.replies.append("\n\n".join(paragraphs))
    tgi.token_delay = 0.0

    root = await slack.user_posts(mention(slack, "tell me everything about koalas"))
    answer = await answer_to(slack, root)

    parts = slack.bot_replies(root.channel, root.ts)
    assert len(parts) >= 2 and parts[-1] is answer
    assert all(len(p.shown) <= 3000 for p in parts)
    assert [m for m in parts if m.buttons] == [answer]
    assert " ".join(p.shown for p in parts).split() == "\n\n".join(paragraphs).split()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the store is incidental
async def test_the_assistant_view_suggests_prompts_and_shows_thinking(
    slack_bot: SlackBot,
) -> None:
    slack, tgi = slack_bot.slack, slack_bot.tgi
    tgi.replies.append(REPLY)
    thread = await slack.start_assistant_thread(user="U0ALICE")
    await slack.wait_for(lambda: slack.suggested_prompts)

    await slack.user_posts("what do koalas eat?", channel=thread.channel, thread_ts=thread.ts)
    answer = await answer_to(slack, thread)

    (prompts,) = slack.suggested_prompts
    assert (prompts["channel_id"], prompts["thread_ts"]) == (thread.channel, thread.ts)
    assert len(prompts["prompts"]) >= 2
    assert answer.shown == REPLY
    shown = [
        status
        for channel, ts, status in slack.statuses
        if (channel, ts) == (thread.channel, thread.ts)
    ]
    assert shown[0] == "is thinking…" and shown[-1] == ""
    await slack.settle()
    assert all(delivery.status == 200 for _, delivery in slack.deliveries)  # none unhandled


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the store is incidental
async def test_failures_are_told_in_plain_words_in_the_thread(
    start_slack_bot: StartSlackBot,
) -> None:
    bot = await start_slack_bot("http", blocked_users=["U0MALLORY"], rate_limit_per_minute=1)
    slack, tgi = bot.slack, bot.tgi

    async def told(text: str, user: str) -> str:
        root = await slack.user_posts(mention(slack, text), user=user)

        def settled() -> str | None:
            replies = slack.bot_replies(root.channel, root.ts)
            return replies[-1].shown if replies and replies[-1].shown != "…" else None

        return await slack.wait_for(settled)

    assert "not available to you" in await told("hi", "U0MALLORY")
    await tgi.stop()
    assert "not reachable" in await told("are you there?", "U0ALICE")
    assert "faster than I can keep up" in await told("and now?", "U0ALICE")
    await tgi.start()
    tgi.fault = Fault("overloaded", times=None)
    assert "busy" in await told("now?", "U0BOB")
    tgi.fault = None
    assert "too long" in await told("word " * 3000, "U0CAROL")
