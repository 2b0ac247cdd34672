"""`koalabot run` killed (SIGKILL) in the middle of an answer, then started again on the same
database: the cut-off answer becomes a notice where it stood, nothing is answered twice, and the
thread goes on."""

from __future__ import annotations

from pathlib import Path

import pytest

from koalabot.config import Settings, load_settings
from koalabot.engine.engine import INTERRUPTED, Engine
from koalabot.events import ThreadKey
from koalabot.store.database import upgrade
from tests.fakes.slack import FakeSlack, Message
from tests.fakes.tgi import FakeTGI
from tests.reliability.process import bot_env, running, sqlite_rows
from tests.reliability.sinks import Recorder


def cut_off(slack: FakeSlack, root: Message) -> Message | None:
    """The bot's reply once it shows a good part of the answer."""
    replies = slack.bot_replies(root.channel, root.ts)
    return replies[0] if replies and replies[0].shown.count("Eucalyptus") >= 5 else None


@pytest.mark.parametrize("streaming", ["off", "on"])
async def test_an_answer_cut_off_by_a_crash_says_so_after_the_restart(
    fake_slack: FakeSlack, fake_tgi: FakeTGI, tmp_path: Path, streaming: str
) -> None:
    slack, tgi = fake_slack, fake_tgi
    tgi.token_delay = 0.05
    tgi.replies.append(" ".join(["Eucalyptus"] * 200))
    db = tmp_path / "bot.db"
    env = bot_env(f"sqlite:///{db}", tgi, slack=slack, slack_streaming=streaming)

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
    if streaming == "off":  # the edit path replaces the cut-off text
        assert placeholder.shown == f"⚠️ {INTERRUPTED}" and not placeholder.buttons
    else:  # a stream can only grow: it is stopped with the notice under what it showed
        said, notice = placeholder.shown.split("\n\n")
        assert said.split() == ["Eucalyptus"] * len(said.split()) and notice == f"⚠️ {INTERRUPTED}"
        assert placeholder.streaming_state == "completed" and not placeholder.context_actions
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


# --- recovery, one step at a time, in one process ------------------------------------------


THREAD = ThreadKey("slack", "T1", "C1", "1700000000.000100")


async def crashed_mid_answer(settings: Settings) -> int:
    """A process that took a message in and began its answer, then died: the conversation id."""
    engine = await Engine.open(settings)
    try:
        stored = await engine.repo.add_user_message(THREAD, "U1", "hi", "1.1", ["slack:1.1"])
        assert stored is not None
        await engine.repo.start_answer(stored[0], stored[1], "1.2")
    finally:
        await engine.close()
    return stored[0]


async def test_a_restarted_engine_tells_the_thread_once_its_platform_is_back(
    migrated_database_url: str, fake_tgi: FakeTGI
) -> None:
    settings = load_settings(None, database_url=migrated_database_url, tgi_url=fake_tgi.url)
    await crashed_mid_answer(settings)
    engine = await Engine.open(settings)
    try:
        thread = Recorder()
        assert await engine.tell_interrupted("discord", lambda where: thread) == 0
        assert await engine.tell_interrupted("slack", lambda where: thread) == 1
        assert thread.shown == {"1.2": f"⚠️ {INTERRUPTED}"}
        assert await engine.tell_interrupted("slack", lambda where: thread) == 0  # told once
        conversation = await engine.repo.conversation_id(THREAD)
        assert conversation is not None
        statuses = [m.status for m in await engine.repo.history(conversation)]
        assert statuses == ["interrupted", "ok"]
    finally:
        await engine.close()


async def test_a_replica_starting_leaves_answers_another_one_is_streaming_alone(
    postgres_url: str, fake_tgi: FakeTGI
) -> None:
    await upgrade(postgres_url)
    settings = load_settings(None, database_url=postgres_url, tgi_url=fake_tgi.url)
    busy = await Engine.open(settings)
    try:
        conversation = await crashed_mid_answer(settings)
        async with busy.repo.thread_lock(conversation):  # as if it were answering there
            starting = await Engine.open(settings)
            await starting.close()
            statuses = [m.status for m in await busy.repo.history(conversation)]
            assert statuses == ["streaming", "ok"]
        restarted = await Engine.open(settings)  # nobody holds the thread: the answer is dead
        await restarted.close()
        statuses = [m.status for m in await busy.repo.history(conversation)]
        assert statuses == ["interrupted", "ok"]
    finally:
        await busy.close()
