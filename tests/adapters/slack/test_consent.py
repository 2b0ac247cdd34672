"""People on Slack opt out and back in themselves (issue 16, item 7): the consent notice says how
(its Opt out button, or ``optout`` in a DM), and each takes effect for exports at once. The real
slack-bolt app and Engine against the fake Slack and TGI."""

from __future__ import annotations

import pytest

from koalabot.config import DEFAULT_NOTICE
from koalabot.engine.notices import OPTED_IN, OPTED_OUT
from koalabot_adapters.slack.buttons import ACTION_OPT_OUT, ACTION_UP
from tests.adapters.slack.test_app import answer_to
from tests.export.consent import exported
from tests.fixtures.slack import StartSlackBot


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_the_button_and_optout_and_optin_in_a_dm_take_effect_for_exports_at_once(
    start_slack_bot: StartSlackBot,
) -> None:
    bot = await start_slack_bot("socket", notice=DEFAULT_NOTICE)
    slack, tgi, url = bot.slack, bot.tgi, bot.settings.database_url
    tgi.replies.append("Koalas sleep a lot.")
    question = await slack.user_posts("do koalas sleep? my-secret-words", channel="D0ALICE")
    answer = await answer_to(slack, question)
    assert "send me optout in a direct message" in answer.shown
    assert ACTION_OPT_OUT in [b["action_id"] for b in answer.buttons]
    assert "terminal" not in answer.shown
    await slack.click(answer, ACTION_UP)
    await slack.wait_for(lambda: slack.ephemerals)
    assert "my-secret-words" in await exported(url)
    await slack.click(answer, ACTION_OPT_OUT)
    await slack.wait_for(lambda: len(slack.ephemerals) == 2)
    assert slack.ephemerals[-1].text == OPTED_OUT and slack.ephemerals[-1].user == "U0ALICE"
    assert "my-secret-words" not in await exported(url)

    told = []
    for word, words in (("optin", OPTED_IN), ("optout", OPTED_OUT), ("Opt in!", OPTED_IN)):
        sent = await slack.user_posts(word, channel="D0ALICE")
        told.append(await slack.wait_for(lambda s=sent: slack.bot_replies("D0ALICE", s.ts)))
        assert told[-1][0].shown == words
        assert ("my-secret-words" in await exported(url)) == (words == OPTED_IN)
    assert len(tgi.prompts) == 1, "the commands are not questions for the model"
