"""A Slack button acts only on the answer of the message it is on, and votes follow the access
rules and rate limit (issue 16, items 2 and 6): the real slack-bolt app and Engine against the
fake Slack and TGI.

The old button is made by hand: its value is rewritten to the id of another person's answer, as
a button posted before that id was given to someone else would carry (or a forged click)."""

from __future__ import annotations

import pytest

from koalabot.engine.notices import NOT_THIS_ANSWER
from koalabot.errors import AccessDeniedError
from koalabot_adapters.slack.buttons import ACTION_DOWN, ACTION_REGENERATE, ACTION_UP
from tests.adapters.slack.test_app import REPLY, answer_to, mention
from tests.fakes.slack import Message
from tests.fixtures.slack import SlackBot, StartSlackBot


def now_naming(message: Message, answer_id: int) -> None:
    """Make the buttons under ``message`` name ``answer_id``."""
    for button in message.buttons:
        button["value"] = str(answer_id)


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_an_old_button_naming_another_persons_answer_changes_nothing(
    slack_bot: SlackBot,
) -> None:
    slack, tgi, repo = slack_bot.slack, slack_bot.tgi, slack_bot.engine.repo
    tgi.replies.extend([REPLY, "Bob, your pin is safe with me."])
    alices_root = await slack.user_posts(mention(slack, "what do koalas eat?"))
    alices = await answer_to(slack, alices_root)
    bobs_root = await slack.user_posts("my pin is 4321", channel="D0BOB", user="U0BOB")
    bobs = await answer_to(slack, bobs_root)
    bobs_id = int(bobs.buttons[0]["value"])
    now_naming(alices, bobs_id)

    await slack.click(alices, ACTION_UP, user="U0ALICE")
    await slack.wait_for(lambda: len(slack.ephemerals) == 1)
    await slack.click(alices, ACTION_REGENERATE, user="U0ALICE")
    await slack.wait_for(lambda: len(slack.ephemerals) == 2)
    await slack.settle()

    assert [(e.user, e.channel, e.text) for e in slack.ephemerals] == [
        ("U0ALICE", alices_root.channel, NOT_THIS_ANSWER)
    ] * 2
    assert await repo.votes(bobs_id) == {}
    assert len(tgi.prompts) == 2, "Bob's conversation was not run again"
    assert len(slack.bot_replies(alices_root.channel, alices_root.ts)) == 1
    assert all(
        "4321" not in m.shown for m in slack.bot_replies(alices_root.channel, alices_root.ts)
    )
    # Bob's own button still counts.
    await slack.click(bobs, ACTION_UP, user="U0BOB")
    await slack.wait_for(lambda: len(slack.ephemerals) == 3)
    assert await repo.votes(bobs_id) == {"U0BOB": 1}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the store is incidental
async def test_votes_follow_the_access_rules_and_the_rate_limit(
    start_slack_bot: StartSlackBot,
) -> None:
    bot = await start_slack_bot("http", blocked_users="U0MALLORY", rate_limit_per_minute=2)
    slack, repo = bot.slack, bot.engine.repo
    bot.tgi.replies.append(REPLY)
    root = await slack.user_posts(mention(slack, "what do koalas eat?"))
    answer = await answer_to(slack, root)
    answer_id = int(answer.buttons[0]["value"])

    await slack.click(answer, ACTION_UP, user="U0MALLORY")
    await slack.wait_for(lambda: len(slack.ephemerals) == 1)
    await slack.user_reacts(answer, "-1", user="U0MALLORY")
    for action in (ACTION_UP, ACTION_DOWN, ACTION_UP):  # a burst: two a minute are let through
        await slack.click(answer, action, user="U0CAROL")
    await slack.wait_for(lambda: len(slack.ephemerals) == 4)
    await slack.settle()

    assert await repo.votes(answer_id) == {"U0CAROL": -1}
    notes = [(e.user, e.text) for e in slack.ephemerals]
    assert notes[0] == ("U0MALLORY", AccessDeniedError.user_message)
    assert [user for user, _ in notes[1:]] == ["U0CAROL"] * 3
    assert "voting faster" in notes[3][1]
