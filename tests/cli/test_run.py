"""`koalabot run` as an operator runs it: one process for Slack and Discord, /healthz and /metrics
on its HTTP port, JSON log lines without anything people wrote, and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from aiohttp import web
from sqlalchemy import make_url

from koalabot.config import load_settings
from koalabot.engine.engine import INTERRUPTED, SHUTTING_DOWN, Engine
from koalabot.events import ChatMessage, ThreadKey
from koalabot.http import ops_app
from koalabot.store.database import upgrade
from koalabot.store.spool import Spool
from koalabot_adapters.slack.buttons import ACTION_UP
from tests.fakes.discord import FakeDiscord, FakeMessage
from tests.fakes.slack import FakeSlack, Message
from tests.fakes.tgi import FakeTGI, Fault
from tests.fixtures.db import POSTGRES_URL
from tests.reliability.process import (
    bot_env,
    get_json,
    post_signed,
    running,
    scrape,
    sqlite_rows,
    value,
)
from tests.reliability.sinks import Recorder


def mention(slack: FakeSlack, text: str) -> str:
    return f"<@{slack.bot_user_id}> {text}"


async def slack_answer(slack: FakeSlack, root: Message) -> Message:
    return await slack.wait_for(lambda: slack.final_answer(root.channel, root.ts), within=30)


async def discord_answer(discord: FakeDiscord, question: FakeMessage) -> FakeMessage:
    thread = await discord.wait_for(lambda: discord.thread_for(question.id), within=30)

    def finished() -> FakeMessage | None:
        done = [m for m in discord.bot_messages(thread.id) if m.components]
        return done[-1] if done else None

    return await discord.wait_for(finished, within=30)


def assert_absent(output: str, words: Iterable[str]) -> None:
    for word in words:
        assert word not in output, f"{word!r} reached the log"


async def test_one_process_serves_both_platforms_with_health_metrics_and_json_logs(
    fake_slack: FakeSlack, fake_discord: FakeDiscord, fake_tgi: FakeTGI, tmp_path: Path
) -> None:
    slack, discord, tgi = fake_slack, fake_discord, fake_tgi
    tgi.token_delay = 0.02  # a few edits per answer at a 0.05 s edit interval
    env = bot_env(f"sqlite:///{tmp_path / 'bot.db'}", tgi, slack=slack, discord=discord)
    async with running(["slack", "discord"], env, "--mode", "http") as bot:
        slack.events_url = bot.url("/slack/events")

        root = await slack.user_posts(mention(slack, "What do koalas eat, quokkaberry?"))
        alice = discord.add_user("alice")
        question = await discord.say(
            alice, discord.channel_id, "Where do koalas live, wombatfig?", mention_bot=True
        )
        on_slack, on_discord = await asyncio.gather(
            slack_answer(slack, root), discord_answer(discord, question)
        )
        assert on_slack.shown == "You said: What do koalas eat, quokkaberry?"
        assert on_discord.content == "You said: Where do koalas live, wombatfig?"
        await slack.click(on_slack, ACTION_UP)
        await slack.wait_for(lambda: slack.ephemerals)

        assert await get_json(bot.url("/healthz")) == (200, {"status": "ok"})

        tgi.fault = Fault("html502", times=None)  # a proxy in front of TGI whose upstream died
        broken = await slack.user_posts(mention(slack, "Are you there, numbatplum?"))
        notice = await slack.wait_for(
            lambda: [m for m in slack.bot_replies(broken.channel, broken.ts) if "⚠️" in m.shown]
        )
        assert "not reachable" in notice[0].shown
        tgi.fault = None

        text, samples = await scrape(bot)
        assert value(samples, "koalabot_messages_received_total", platform="slack") == 2
        assert value(samples, "koalabot_messages_received_total", platform="discord") == 1
        assert value(samples, "koalabot_messages_answered_total", platform="slack") == 1
        assert value(samples, "koalabot_messages_answered_total", platform="discord") == 1
        failed = value(samples, "koalabot_messages_failed_total", platform="slack", reason="failed")
        assert failed == 1
        errors = [v for (n, _), v in samples.items() if n == "koalabot_backend_errors_total"]
        assert sum(errors) == 1
        assert value(samples, "koalabot_time_to_first_token_seconds_count") == 2
        assert value(samples, "koalabot_answer_duration_seconds_count") == 2
        assert value(samples, "koalabot_tokens_per_second_count") == 2
        assert value(samples, "koalabot_backend_requests_in_flight") == 0
        assert value(samples, "koalabot_votes_total", rating="+1") == 1
        for platform in ("slack", "discord"):
            assert value(samples, "koalabot_platform_edit_calls_total", platform=platform) >= 1
        assert "# HELP koalabot_platform_rate_limit_waits" in text  # none yet, but exported

        await tgi.stop()
        status, body = await get_json(bot.url("/healthz"))
        assert status == 503
        assert body["status"] == "unhealthy" and tgi.url in body["problems"]["backend"]
        await tgi.start()  # the same port: the model server is back
        assert await get_json(bot.url("/healthz")) == (200, {"status": "ok"})

        assert await bot.stop() == 0, bot.output

    records = bot.records  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    answered = [r["message"] for r in records if r["message"].startswith("answered ")]
    assert sorted(line.split()[1] for line in answered) == ["discord", "slack"]
    for line in answered:  # one line per answer, with its ids and timings
        assert all(f" {key}=" in line for key in ("answer", "message", "conversation", "ttft"))
        assert " total=" in line and " tokens=" in line
    # what people wrote and what the model answered stays out; so do the credentials
    assert_absent(bot.output, ["quokkaberry", "wombatfig", "numbatplum", "koalas eat"])
    assert_absent(bot.output, [slack.bot_token, slack.signing_secret, discord.token])


async def test_messages_an_earlier_run_kept_while_its_database_was_down_are_answered(
    fake_slack: FakeSlack, fake_tgi: FakeTGI, tmp_path: Path, _spool_in_tmp_path: Path
) -> None:
    slack, tgi = fake_slack, fake_tgi
    text = "Did you get this, potoroopear?"
    root = await slack.user_posts(mention(slack, text), deliver=False)
    # What the last `koalabot run` kept while its database was down, before it was stopped.
    arrived = datetime.now(UTC).replace(tzinfo=None, microsecond=123456) - timedelta(minutes=3)
    spool = Spool(_spool_in_tmp_path, limit=10)
    where = ThreadKey("slack", slack.team_id, root.channel, root.ts)
    keys = (f"{root.channel}:{root.ts}",)
    spool.add(ChatMessage(where, root.user, text, root.ts, keys), arrived.replace(tzinfo=UTC))
    spool.close()
    db = tmp_path / "bot.db"
    env = bot_env(f"sqlite:///{db}", tgi, slack=slack, spool_retry_interval=0.05)
    async with running(["slack"], env, "--mode", "http") as bot:
        slack.events_url = bot.url("/slack/events")
        answer = await slack_answer(slack, root)
        assert await bot.stop() == 0, bot.output

    assert answer.shown == f"You said: {text}" and answer.buttons
    assert len(slack.bot_replies(root.channel, root.ts)) == 1
    (stored,) = sqlite_rows(db, "SELECT text, created_at FROM messages WHERE role = 'user'")
    assert stored == (text, arrived.isoformat(" "))  # stamped when it arrived
    assert Spool(_spool_in_tmp_path, limit=10).pending() == []
    assert any("1 messages kept while the database" in r["message"] for r in bot.records)
    assert_absent(bot.output, ["potoroopear"])


async def test_sigterm_finishes_short_answers_interrupts_long_ones_and_takes_no_new_work(
    fake_slack: FakeSlack, fake_tgi: FakeTGI, tmp_path: Path
) -> None:
    slack, tgi = fake_slack, fake_tgi
    tgi.token_delay = 0.05
    long_reply = " ".join(["Eucalyptus"] * 200)  # ten seconds: longer than the grace period
    tgi.replies.extend([long_reply, " Short and sweet."])
    db = tmp_path / "bot.db"
    env = bot_env(f"sqlite:///{db}", tgi, slack=slack, shutdown_grace=1.5)
    async with running(["slack"], env, "--mode", "http") as bot:
        slack.events_url = bot.url("/slack/events")
        long_root = await slack.user_posts(mention(slack, "Tell me everything."))
        await slack.wait_for(lambda: slack.bot_replies(long_root.channel, long_root.ts))
        short_root = await slack.user_posts(mention(slack, "Tell me one thing."))
        await slack.wait_for(lambda: slack.bot_replies(short_root.channel, short_root.ts))

        bot.process.terminate()
        status, body = await get_json(bot.url("/healthz"))
        while status == 200:  # the signal is handled within a moment
            status, body = await get_json(bot.url("/healthz"))
        assert status == 503 and body["problems"]["shutdown"] == "shutting down"
        late = await slack.user_posts(mention(slack, "Still there?"), deliver=False)
        refused = await post_signed(
            slack, bot.url("/slack/events"), slack.event_body(slack.mention_event(late))
        )
        assert refused == 503  # Slack delivers it again later, to a replica that is up

        assert await bot.stop() == 0, bot.output

    short = slack.final_answer(short_root.channel, short_root.ts)
    assert short is not None and short.shown == "Short and sweet."
    (cut,) = slack.bot_replies(long_root.channel, long_root.ts)
    assert cut.shown.startswith("Eucalyptus") and cut.shown.endswith(f"⚠️ {INTERRUPTED}")
    assert not cut.buttons
    rows = sqlite_rows(db, "SELECT role, text, status FROM messages ORDER BY id")
    assert [(role, status) for role, _, status in rows] == [
        ("user", "ok"),
        ("assistant", "interrupted"),
        ("user", "ok"),
        ("assistant", "ok"),
    ]
    assert rows[1][1].startswith("Eucalyptus")  # the partial answer is kept
    assert "Still there?" not in [text for _, text, _ in rows]
    assert any("interrupted" in r["message"] for r in bot.records)


async def test_healthz_names_the_database_when_it_is_gone(
    postgres_url: str, fake_tgi: FakeTGI
) -> None:
    await upgrade(postgres_url)
    engine = await Engine.open(load_settings(None, database_url=postgres_url, tgi_url=fake_tgi.url))
    runner = web.AppRunner(ops_app(engine))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    healthz = f"http://127.0.0.1:{runner.addresses[0][1]}/healthz"
    try:
        assert await get_json(healthz) == (200, {"status": "ok"})
        admin = await asyncpg.connect(
            make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(False)
        )
        try:  # the operator dropped the wrong database: every connection is cut
            await admin.execute(f'DROP DATABASE "{make_url(postgres_url).database}" WITH (FORCE)')
        finally:
            await admin.close()
        status, body = await get_json(healthz)
        assert status == 503 and set(body["problems"]) == {"database"}
        assert body["problems"]["database"].startswith("unreachable")
    finally:
        await runner.cleanup()
        await engine.close()


async def test_shutdown_tells_every_thread_what_became_of_its_message(
    sqlite_url: str, fake_tgi: FakeTGI
) -> None:
    fake_tgi.token_delay = 0.05
    fake_tgi.replies.extend([" One two three four five six seven eight nine ten.", " Done."])
    settings = load_settings(None, database_url=sqlite_url, tgi_url=fake_tgi.url, notice="")
    thread = ThreadKey("slack", "T1", "C1", "1.0")
    engine = await Engine.open(settings)
    try:
        first, second, late = Recorder(), Recorder(), Recorder()
        asked = [
            asyncio.create_task(engine.handle_message(ChatMessage(thread, "U1", q, ts), sink))
            for q, ts, sink in [("Count to ten.", "1.1", first), ("And back?", "1.2", second)]
        ]
        await first.wait_for(lambda: first.shown.get("m0", "").startswith("One"))  # streaming
        assert await engine.shutdown(grace=0.1) == 2
        results = await asyncio.gather(*asked)
        refused = await engine.handle_message(ChatMessage(thread, "U1", "Hello?", "1.3"), late)
    finally:
        await engine.close()

    assert [r.status for r in results] == ["interrupted", "interrupted"]
    assert first.shown["m0"].startswith("One") and first.shown["m0"].endswith(INTERRUPTED)
    assert second.notices == [SHUTTING_DOWN] and not second.shown  # it was waiting its turn
    assert refused.status == "interrupted" and late.notices == [SHUTTING_DOWN]
