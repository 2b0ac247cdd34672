"""After a crash nothing stored is left unanswered: a message that waited behind the answer a
SIGKILL cut off is answered after the restart (a real `koalabot run` on the fakes), and one left
too long ago gets a notice instead (the engine, SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from koalabot.config import Settings, load_settings
from koalabot.engine.engine import INTERRUPTED, SHUTTING_DOWN, Engine
from koalabot.engine.recovery import ANSWER_WITHIN, SETTLED
from koalabot.events import ChatMessage, ThreadKey
from koalabot.store.models import utcnow
from tests.fakes.slack import FakeSlack, Message
from tests.fakes.tgi import FakeTGI
from tests.reliability.process import bot_env, running, sqlite_rows
from tests.reliability.sinks import Recorder


def waiting_behind(db: Path, slack: FakeSlack, root: Message) -> Message | None:
    """The bot's cut-off reply, once the thread's next message is stored behind its answer."""
    stored = sqlite_rows(db, "SELECT role, status FROM messages ORDER BY id")
    replies = slack.bot_replies(root.channel, root.ts)
    behind = stored == [("user", "ok"), ("assistant", "streaming"), ("user", "ok")]
    return replies[0] if behind and replies else None


async def test_a_message_waiting_behind_a_killed_answer_is_answered_after_the_restart(
    fake_slack: FakeSlack, fake_tgi: FakeTGI, tmp_path: Path
) -> None:
    slack, tgi = fake_slack, fake_tgi
    tgi.token_delay = 0.05
    tgi.replies.append(" ".join(["Eucalyptus"] * 400))
    db = tmp_path / "bot.db"
    env = bot_env(f"sqlite:///{db}", tgi, slack=slack)
    mention = f"<@{slack.bot_user_id}>"

    async with running(["slack"], env, "--mode", "http") as first:
        slack.events_url = first.url("/slack/events")
        root = await slack.user_posts(f"{mention} Tell me a long story.")
        await slack.wait_for(lambda: slack.bot_replies(root.channel, root.ts) or None)
        await slack.user_posts(f"{mention} And what do koalas eat?", thread_ts=root.ts)
        placeholder = await slack.wait_for(lambda: waiting_behind(db, slack, root), 30)
        await first.kill()

    tgi.token_delay = 0.005
    tgi.replies.clear()
    tgi.replies.append(" Eucalyptus leaves, mostly.")
    async with running(["slack"], env, "--mode", "http") as second:
        slack.events_url = second.url("/slack/events")
        answer = await slack.wait_for(lambda: slack.final_answer(root.channel, root.ts), 30)
        await slack.wait_for(lambda: INTERRUPTED in placeholder.shown)
        assert await second.stop() == 0, second.output

    assert answer.shown == "Eucalyptus leaves, mostly."
    assert slack.bot_replies(root.channel, root.ts) == [placeholder, answer]
    rows = sqlite_rows(db, "SELECT id, role, status, parent_id FROM messages ORDER BY id")
    assert [row[1:] for row in rows] == [
        ("user", "ok", None),
        ("assistant", "interrupted", rows[0][0]),
        ("user", "ok", None),
        ("assistant", "ok", rows[2][0]),
    ]
    assert tgi.prompts[-1].endswith("USER: And what do koalas eat? GPT:")
    assert any("a crash left unanswered" in r["message"] for r in second.records)


# --- one step at a time, in one process --------------------------------------------------------

THREAD = ThreadKey("slack", "T1", "C1", "1700000000.000100")


async def left_behind(settings: Settings, texts: dict[str, timedelta]) -> None:
    """A process that stored messages (each ``ago`` before now) and died before answering."""
    engine = await Engine.open(settings)
    try:
        for n, (text, ago) in enumerate(texts.items()):
            ts = f"1.{n}"
            at = utcnow() - ago
            stored = await engine.repo.add_user_message(THREAD, "U1", text, ts, [ts], at)
            assert stored is not None
    finally:
        await engine.close()


async def test_left_behind_messages_are_answered_in_order_and_old_ones_get_a_notice(
    migrated_database_url: str, fake_tgi: FakeTGI
) -> None:
    url, tgi = migrated_database_url, fake_tgi.url
    settings = load_settings(None, database_url=url, tgi_url=tgi, notice="")
    old = ANSWER_WITHIN + timedelta(minutes=5)
    settled = SETTLED + timedelta(seconds=5)  # PostgreSQL leaves younger ones to live replicas
    await left_behind(settings, {"an old one": old, "first": settled * 2, "second": settled})
    fake_tgi.replies.extend([" One.", " Two."])

    engine = await Engine.open(settings)
    try:
        thread = Recorder()
        engine.platform_connected("slack", lambda where: thread)
        await thread.wait_for(lambda: len(thread.buttons) == 2 and len(thread.notices) == 1)
        await asyncio.sleep(0.1)  # nothing more comes
    finally:
        await engine.close()

    assert list(thread.shown.values()) == ["One.", "Two."]
    assert (
        "from 20" in thread.notices[0]
        and "too old for me to answer now. Please send it again" in thread.notices[0]
    )
    assert len(fake_tgi.prompts) == 2  # the old one is not answered (its words are context)
    assert fake_tgi.prompts[0].endswith("USER: first GPT:")
    assert fake_tgi.prompts[1].endswith("GPT:One.</s>USER: second GPT:")

    restarted = await Engine.open(settings)  # told once: nothing is left for the next start
    try:
        assert len(restarted.unanswered) == 0
    finally:
        await restarted.close()


async def test_a_message_told_to_be_sent_again_at_shutdown_is_not_answered_after_it(
    sqlite_url: str, fake_tgi: FakeTGI
) -> None:
    fake_tgi.token_delay = 0.05
    fake_tgi.replies.append(" One two three four five six seven eight nine ten.")
    settings = load_settings(None, database_url=sqlite_url, tgi_url=fake_tgi.url, notice="")
    engine = await Engine.open(settings)
    try:
        first, second = Recorder(), Recorder()
        asked = [
            asyncio.create_task(engine.handle_message(ChatMessage(THREAD, "U1", q, ts), sink))
            for q, ts, sink in [("Count to ten.", "1.1", first), ("And back?", "1.2", second)]
        ]
        await first.wait_for(lambda: first.shown.get("m0", "").startswith("One"))  # streaming
        await engine.shutdown(grace=0.1)
        await asyncio.gather(*asked)
    finally:
        await engine.close()
    assert second.notices == [SHUTTING_DOWN]  # "send it again": so it is not answered later

    restarted = await Engine.open(settings)
    try:
        assert len(restarted.unanswered) == 0
    finally:
        await restarted.close()
