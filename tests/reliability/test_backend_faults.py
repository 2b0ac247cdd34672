"""The model server misbehaves while a person asks in Slack (real slack-bolt adapter, real Engine):
their message is kept, the thread shows a notice in plain words, the next message is answered,
and no message is answered twice."""

from __future__ import annotations

import pytest

from koalabot.engine.engine import Engine
from koalabot.events import ThreadKey
from koalabot_adapters.slack.buttons import ACTION_REGENERATE
from tests.fakes.slack import FakeSlack, Message
from tests.fakes.tgi import FakeTGI, Fault
from tests.fixtures.slack import StartSlackBot

#: The behaviour does not depend on the database: SQLite only, to save time.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

PARTIAL = " Koalas are marsupials that live in eucalyptus forests of eastern Australia."

FAULTS = {
    "refused": (None, "not reachable"),
    "overloaded": (Fault("overloaded", times=None), "busy"),
    "stalled": (Fault("stall", after_tokens=3), "took too long"),
    "dies-mid-stream": (Fault("disconnect", after_tokens=3), "stopped in the middle"),
    "error-event-mid-stream": (Fault("error", after_tokens=3), "stopped in the middle"),
    "answers-html": (Fault("html502", times=None), "not reachable"),
}


def mention(slack: FakeSlack, text: str) -> str:
    return f"<@{slack.bot_user_id}> {text}"


async def stored(engine: Engine, slack: FakeSlack, root: Message) -> list[tuple[str, str, str]]:
    """(role, text, status) of the thread's messages, as the store has them."""
    where = ThreadKey("slack", slack.team_id, root.channel, root.ts)
    conversation = await engine.repo.conversation_id(where)
    assert conversation is not None
    page = await engine.repo.history(conversation, limit=50)
    return [(m.role, m.text, m.status) for m in reversed(page)]


@sqlite_only
@pytest.mark.parametrize(("fault", "words"), FAULTS.values(), ids=FAULTS.keys())
async def test_a_backend_fault_is_told_in_the_thread_and_the_next_message_is_answered(
    start_slack_bot: StartSlackBot, fake_tgi: FakeTGI, fault: Fault | None, words: str
) -> None:
    bot = await start_slack_bot("http", idle_timeout=0.5)
    slack, tgi = bot.slack, fake_tgi
    tgi.replies.append(PARTIAL)
    if fault is None:
        await tgi.stop()  # nothing listens: connection refused
    tgi.fault = fault

    root = await slack.user_posts(mention(slack, "Tell me about koalas."))
    notice = await slack.wait_for(
        lambda: [m for m in slack.bot_replies(root.channel, root.ts) if "⚠️" in m.shown]
    )
    assert words in notice[0].shown
    # nothing to vote on: only 🔄, which tries the failed answer again
    assert [b["action_id"] for b in notice[0].buttons] == [ACTION_REGENERATE]
    if fault is not None and fault.after_tokens:
        assert notice[0].shown.startswith("Koalas are")  # what was said stays, above the notice

    if fault is None:
        await tgi.start()  # the same port: the operator restarted the server
    tgi.fault = None
    tgi.replies.clear()
    tgi.replies.append(" Yes, they sleep a lot.")
    follow_up = await slack.user_posts(mention(slack, "Do they sleep?"), thread_ts=root.ts)
    assert follow_up.thread_ts == root.ts
    answer = await slack.wait_for(
        lambda: (m := slack.final_answer(root.channel, root.ts)) is not notice[0] and m
    )
    assert answer.shown == "Yes, they sleep a lot."

    await slack.settle()
    replies = slack.bot_replies(root.channel, root.ts)
    assert len(replies) == 2  # the notice and the answer: nothing twice
    rows = await stored(bot.engine, slack, root)
    assert rows[0] == ("user", "Tell me about koalas.", "ok")
    assert rows[1][0] == "assistant" and rows[1][2] == "failed"
    assert rows[2:] == [("user", "Do they sleep?", "ok"), ("assistant", answer.shown, "ok")]
    assert "Koalas are" not in tgi.prompts[-1]  # a failed answer is not fed back to the model
