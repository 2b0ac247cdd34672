"""Text a database would refuse (a NUL byte, a lone surrogate) through the real Slack path, on
SQLite and PostgreSQL: the message is stored as the person wrote it (those code points replaced),
answered at once, and nothing waits in the spool."""

from __future__ import annotations

import pytest

from koalabot.events import ThreadKey
from tests.adapters.slack.test_app import answer_to, mention
from tests.fixtures.slack import SlackBot

REPLACEMENT = "\N{REPLACEMENT CHARACTER}"


@pytest.mark.parametrize(
    ("odd", "shown"), [("\x00", REPLACEMENT), ("\ud83d", REPLACEMENT)], ids=["nul", "surrogate"]
)
@pytest.mark.parametrize("slack_bot", ["http"], indirect=True)
async def test_a_nul_or_lone_surrogate_is_stored_readable_and_answered_at_once(
    slack_bot: SlackBot, odd: str, shown: str
) -> None:
    slack, tgi, engine = slack_bot.slack, slack_bot.tgi, slack_bot.engine
    tgi.replies.append("Koalas eat eucalyptus.")
    root = await slack.user_posts(mention(slack, f"what do koalas{odd} eat? 🐨"))
    answer = await answer_to(slack, root)

    assert answer.shown == "Koalas eat eucalyptus."
    where = ThreadKey("slack", slack.team_id, root.channel, root.ts)
    transcript = await engine.transcript(where)
    assert [t.content for t in transcript] == [
        f"what do koalas{shown} eat? 🐨",
        "Koalas eat eucalyptus.",
    ]
    assert engine.spool is None or len(engine.spool) == 0
    # the next message of the thread is not held behind the first one
    tgi.replies.append("About half a kilogram.")
    await slack.user_posts("how much?", thread_ts=root.ts)
    second = await answer_to(slack, root, nth=2)
    assert second.shown == "About half a kilogram."
