"""Replicas on PostgreSQL: several `koalabot run` processes with the same Slack configuration all
receive every event (Slack's retries, and a mention sent as two events), yet each message is
answered once, and a thread's answers come in the order its messages were sent."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import asyncpg
import pytest

from koalabot.config import load_settings
from koalabot.engine import engine as engine_module
from koalabot.engine.engine import Engine
from koalabot.events import ChatMessage, ThreadKey
from koalabot.store.database import upgrade
from tests.fakes.slack import FakeSlack, Message
from tests.fakes.tgi import FakeTGI
from tests.reliability.process import BotProcess, bot_env, post_signed, running, scrape, value
from tests.reliability.sinks import Recorder

THREADS = 3
PER_THREAD = 3


async def post_to_all(slack: FakeSlack, replicas: list[BotProcess], msg: Message) -> list[Any]:
    """Deliver a person's post the way Slack does to an app behind several servers: as `message`
    and `app_mention`, each to every replica at once; returns the bodies (for retries)."""
    bodies = [
        slack.event_body(slack.message_event(msg)),
        slack.event_body(slack.mention_event(msg)),
    ]
    statuses = await asyncio.gather(
        *(post_signed(slack, r.url("/slack/events"), b) for r in replicas for b in bodies)
    )
    assert set(statuses) == {200}
    return bodies


async def converse(
    slack: FakeSlack, replicas: list[BotProcess], thread: int, sent: list[Any]
) -> list[Message]:
    """One person sends a burst of messages in a new thread; the messages, in order."""
    mention = f"<@{slack.bot_user_id}>"
    root = await slack.user_posts(f"{mention} thread {thread} message 1", deliver=False)
    messages = [root]
    sent += await post_to_all(slack, replicas, root)
    for n in range(2, PER_THREAD + 1):
        await asyncio.sleep(0.2)  # a quick typist, while the first answer is still streaming
        msg = await slack.user_posts(
            f"{mention} thread {thread} message {n}", thread_ts=root.ts, deliver=False
        )
        messages.append(msg)
        sent += await post_to_all(slack, replicas, msg)
    return messages


def answered(slack: FakeSlack, root: Message, count: int) -> bool:
    """The thread shows ``count`` bot replies, all finished answers."""
    replies = slack.bot_replies(root.channel, root.ts)
    return len(replies) == count and all(m.buttons for m in replies)


async def answered_by(replica: BotProcess) -> float:
    _, samples = await scrape(replica)
    return value(samples, "koalabot_messages_answered_total", platform="slack")


async def test_two_replicas_answer_every_message_once_and_in_thread_order(
    fake_slack: FakeSlack, fake_tgi: FakeTGI, postgres_url: str
) -> None:
    slack, tgi = fake_slack, fake_tgi
    await upgrade(postgres_url)  # `koalabot db upgrade`: PostgreSQL is never upgraded implicitly
    tgi.token_delay = 0.05  # about 0.6 s an answer
    env = bot_env(postgres_url, tgi, slack=slack)
    async with contextlib.AsyncExitStack() as stack:
        replicas = list(
            await asyncio.gather(
                *(
                    stack.enter_async_context(running(["slack"], env, "--mode", "http"))
                    for _ in "ab"
                )
            )
        )
        slack.events_url = replicas[0].url("/slack/events")  # where the bot's own echoes go
        sent: list[Any] = []
        threads = await asyncio.gather(
            *(converse(slack, replicas, t, sent) for t in range(THREADS))
        )

        await slack.wait_for(lambda: all(answered(slack, t[0], PER_THREAD) for t in threads), 60)
        # Slack retries every delivery (say the acks were slow); then the person goes on
        await asyncio.gather(
            *(
                post_signed(slack, r.url("/slack/events"), b, retry_num=1)
                for r in replicas
                for b in sent
            )
        )
        root = threads[0][0]
        last = await slack.user_posts(
            f"<@{slack.bot_user_id}> thread 0 message 4", thread_ts=root.ts, deliver=False
        )
        await post_to_all(slack, replicas, last)
        await slack.wait_for(lambda: answered(slack, root, PER_THREAD + 1), 30)
        expected = THREADS * PER_THREAD + 1
        counted = 0.0
        async with asyncio.timeout(10):  # the count follows the final edit by a moment
            while counted != expected:
                counted = sum(await asyncio.gather(*(answered_by(r) for r in replicas)))
        await slack.settle()

    assert len(tgi.prompts) == expected  # each message went to the model once
    for messages in threads:
        root = messages[0]
        replies = slack.bot_replies(root.channel, root.ts)
        texts = [m.text.replace(f"<@{slack.bot_user_id}> ", "") for m in messages]
        wanted = [f"You said: {t}" for t in texts]
        if root is threads[0][0]:
            wanted.append("You said: thread 0 message 4")
        assert [r.shown for r in replies] == wanted  # once each, in the order sent
        for earlier, later in itertools.pairwise(texts):
            (prompt,) = [p for p in tgi.prompts if p.endswith(f"USER: {later} GPT:")]
            assert f"USER: {earlier} GPT:You said: {earlier}</s>" in prompt
    conn = await asyncpg.connect(postgres_url)
    try:
        rows = await conn.fetch(
            "SELECT parent_id, count(*) AS n FROM messages WHERE role = 'assistant' GROUP BY 1"
        )
        users = await conn.fetchval("SELECT count(*) FROM messages WHERE role = 'user'")
    finally:
        await conn.close()
    assert users == expected
    assert len(rows) == users and {r["n"] for r in rows} == {1}


# --- the ordering rule, one step at a time, in one process -------------------------------


THREAD = ThreadKey("slack", "T1", "C1", "1700000000.000100")


def chat(text: str, ts: str) -> ChatMessage:
    return ChatMessage(THREAD, "U1", text, ts, dedupe_keys=(f"slack:msg:C1:{ts}",))


async def open_engine(url: str, tgi: FakeTGI) -> Engine:
    return await Engine.open(
        load_settings(None, database_url=url, tgi_url=tgi.url, notice="", edit_interval=0.01)
    )


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # replicas share PostgreSQL
async def test_an_answer_waits_for_an_earlier_message_another_replica_took_in(
    migrated_database_url: str, fake_tgi: FakeTGI
) -> None:
    engine = await open_engine(migrated_database_url, fake_tgi)
    try:
        # another replica stored the first message and is about to answer it
        stored = await engine.repo.add_user_message(THREAD, "U1", "first", "1.1", ["slack:1.1"])
        assert stored is not None
        fake_tgi.replies.append(" The second answer.")
        later = Recorder()
        second = asyncio.create_task(engine.handle_message(chat("second", "1.2"), later))
        await asyncio.sleep(0.3)
        assert not later.shown and not fake_tgi.prompts  # it waits its turn
        await engine.repo.decline(stored[1])  # that replica declined it (say, a rate limit)
        result = await second
        assert result.status == "ok" and later.shown == {"m0": "The second answer."}
        assert fake_tgi.prompts[-1].endswith("USER: first USER: second GPT:")
    finally:
        await engine.close()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_message_nobody_answers_holds_its_thread_up_only_briefly(
    migrated_database_url: str, fake_tgi: FakeTGI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "ORDER_WAIT", 0.3)
    engine = await open_engine(migrated_database_url, fake_tgi)
    try:
        # a replica stored this one and crashed before it could answer
        assert await engine.repo.add_user_message(THREAD, "U1", "lost", "1.1", ["slack:1.1"])
        fake_tgi.replies.append(" Yes.")
        later = Recorder()
        result = await engine.handle_message(chat("still there?", "1.2"), later)
        assert result.status == "ok" and later.shown == {"m0": "Yes."}
    finally:
        await engine.close()
