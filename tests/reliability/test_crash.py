"""`koalabot run` killed (SIGKILL) in the middle of an answer, then started again on the same
database: the cut-off answer becomes a notice where it stood, nothing is answered twice, and the
thread goes on."""

from __future__ import annotations

from pathlib import Path

from koalabot.engine import INTERRUPTED
from tests.fakes.slack import FakeSlack, Message
from tests.fakes.tgi import FakeTGI
from tests.reliability.process import bot_env, running, sqlite_rows


def cut_off(slack: FakeSlack, root: Message) -> Message | None:
    """The bot's reply once it shows a good part of the answer."""
    replies = slack.bot_replies(root.channel, root.ts)
    return replies[0] if replies and replies[0].shown.count("Eucalyptus") >= 5 else None


async def test_an_answer_cut_off_by_a_crash_says_so_after_the_restart(
    fake_slack: FakeSlack, fake_tgi: FakeTGI, tmp_path: Path
) -> None:
    slack, tgi = fake_slack, fake_tgi
    tgi.token_delay = 0.05
    tgi.replies.append(" ".join(["Eucalyptus"] * 200))
    db = tmp_path / "bot.db"
    env = bot_env(f"sqlite:///{db}", tgi, slack=slack)

    async with running(["slack"], env, "--mode", "http") as first:
        slack.events_url = first.url("/slack/events")
        root = await slack.user_posts(f"<@{slack.bot_user_id}> Tell me a long story.")
        placeholder = await slack.wait_for(lambda: cut_off(slack, root))
        await first.kill()

    tgi.token_delay = 0.005
    tgi.replies.clear()
    tgi.replies.append(" Once upon a time, a koala slept.")
    async with running(["slack"], env, "--mode", "http") as second:
        slack.events_url = second.url("/slack/events")
        await slack.user_posts(f"<@{slack.bot_user_id}> Try again?", thread_ts=root.ts)
        answer = await slack.wait_for(lambda: slack.final_answer(root.channel, root.ts), 30)
        await slack.wait_for(lambda: INTERRUPTED in placeholder.shown)
        assert await second.stop() == 0, second.output

    assert answer.shown == "Once upon a time, a koala slept."
    assert placeholder.shown == f"⚠️ {INTERRUPTED}" and not placeholder.buttons
    assert slack.bot_replies(root.channel, root.ts) == [placeholder, answer]
    rows = sqlite_rows(db, "SELECT role, text, status FROM messages ORDER BY id")
    assert [(role, status) for role, _, status in rows] == [
        ("user", "ok"),
        ("assistant", "interrupted"),
        ("user", "ok"),
        ("assistant", "ok"),
    ]
    assert rows[0][1] == "Tell me a long story." and rows[2][1] == "Try again?"
    assert len(tgi.prompts) == 2  # the restarted bot did not answer the first message again
    assert "Eucalyptus" not in tgi.prompts[-1]  # nor took the cut-off text for its own words
    assert any("left streaming by a crash" in r["message"] for r in second.records)
