"""A failed answer in Slack is retried in place: 🔄 under the failure notice, or the same words
sent again in the thread (issue 19, item 1). The real bolt app against the fake Slack and TGI."""

from __future__ import annotations

import pytest

from koalabot.events import ThreadKey
from koalabot_adapters.slack.buttons import ACTION_REGENERATE, ACTION_UP
from tests.fakes.slack import FakeSlack, Message
from tests.fakes.tgi import Fault
from tests.fixtures.slack import SlackBot

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
ASKED_ONCE = "BEGINNING OF CONVERSATION: USER: are you there? GPT:"


async def notice_in(slack: FakeSlack, root: Message) -> Message:
    """The failure notice the answer's placeholder turned into."""
    return await slack.wait_for(
        lambda: next((m for m in slack.bot_replies(root.channel, root.ts) if "⚠️" in m.shown), None)
    )


async def answer_in(slack: FakeSlack, root: Message) -> Message:
    """The finished answer (the one with 👍) in the thread."""
    return await slack.wait_for(
        lambda: next(
            (
                m
                for m in slack.bot_replies(root.channel, root.ts)
                if any(b["action_id"] == ACTION_UP for b in m.buttons)
            ),
            None,
        )
    )


async def test_retry_button_under_the_failure_notice_answers_the_question(
    slack_bot: SlackBot,
) -> None:
    slack, tgi = slack_bot.slack, slack_bot.tgi
    await tgi.stop()
    root = await slack.user_posts(f"<@{slack.bot_user_id}> are you there?")
    notice = await notice_in(slack, root)
    assert "🔄" in notice.shown and "same message again" in notice.shown
    assert [b["action_id"] for b in notice.buttons] == [ACTION_REGENERATE]

    await tgi.start()
    tgi.replies.append("Yes, I am here.")
    await slack.click(notice, ACTION_REGENERATE)
    answer = await answer_in(slack, root)

    assert answer.shown == "Yes, I am here."
    assert tgi.prompts == [ASKED_ONCE]


async def test_the_same_words_again_in_the_thread_are_a_retry_not_a_second_turn(
    slack_bot: SlackBot,
) -> None:
    slack, tgi, engine = slack_bot.slack, slack_bot.tgi, slack_bot.engine
    tgi.fault = Fault("error", times=1)
    tgi.replies.extend(["Ye", "Yes, I am here."])  # the first goes to the failed answer
    root = await slack.user_posts(f"<@{slack.bot_user_id}> are you there?")
    await notice_in(slack, root)

    await slack.user_posts("are you there?", thread_ts=root.ts)
    answer = await answer_in(slack, root)

    assert answer.shown == "Yes, I am here."
    assert tgi.prompts == [ASKED_ONCE, ASKED_ONCE]
    where = ThreadKey("slack", slack.team_id, root.channel, root.ts)
    said = await engine.transcript(where)
    assert [(s.role, s.content, s.retry) for s in said] == [
        ("user", "are you there?", False),
        ("assistant", "Yes, I am here.", True),
    ]
