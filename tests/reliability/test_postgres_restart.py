"""PostgreSQL restarted while the Slack bot is answering several people: every message that was
taken in stays stored, every thread shows an answer or a notice, a message sent while the
database is down is kept in the spool and answered once it is back, and the bot answers again —
without answering anything twice.

Restarting the server disturbs everything else using it, so this only runs where allowed: in CI
(KOALABOT_REQUIRE_POSTGRES=1) or with KOALABOT_ALLOW_PG_RESTART=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import make_url

from koalabot.adapter import RunOptions
from koalabot.engine.engine import Engine
from koalabot.store.database import upgrade
from koalabot_adapters.slack.app import create_adapter
from tests.fakes.slack import FakeSlack, Message
from tests.fakes.tgi import FakeTGI
from tests.fixtures.db import POSTGRES_URL
from tests.fixtures.slack import slack_settings

REQUIRED = os.environ.get("KOALABOT_REQUIRE_POSTGRES") == "1"
CAN_RESTART = shutil.which("pg_ctlcluster") is not None and Path("/etc/postgresql").is_dir()
ALLOWED = REQUIRED or os.environ.get("KOALABOT_ALLOW_PG_RESTART") == "1"

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not ALLOWED,
        reason="restarts PostgreSQL: set KOALABOT_ALLOW_PG_RESTART=1 (CI runs it)",
    ),
]

VERSION = sorted(os.listdir("/etc/postgresql"))[-1] if CAN_RESTART else ""
THREADS = 4
REPLY = " " + " ".join(["Eucalyptus"] * 40)  # two seconds at 0.05 s a token


def _dsn(database: str | None = None) -> str:
    url = make_url(POSTGRES_URL).set(drivername="postgresql")
    return (url.set(database=database) if database else url).render_as_string(False)


async def _ready(within: float = 60.0) -> None:
    """Wait until the server accepts connections again."""
    async with asyncio.timeout(within):
        while True:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn = await asyncpg.connect(_dsn(), timeout=2)
                await conn.close()
                return
            await asyncio.sleep(0.1)


async def _cluster(action: str) -> None:
    version = VERSION
    process = await asyncio.create_subprocess_exec(
        "pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action
    )
    assert await process.wait() == 0, f"pg_ctlcluster {action} failed"


@pytest.fixture
async def restartable_postgres() -> AsyncIterator[str]:
    """A throwaway database on a server this test may restart; the server is up again after."""
    if not CAN_RESTART:
        if REQUIRED:
            pytest.fail("pg_ctlcluster is needed to restart PostgreSQL")
        pytest.skip("no pg_ctlcluster here")
    try:
        await _ready(within=5)
    except TimeoutError:
        if REQUIRED:
            pytest.fail("PostgreSQL is not reachable (KOALABOT_REQUIRE_POSTGRES=1)")
        pytest.skip("PostgreSQL is not reachable")
    name = f"kb_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(_dsn())
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield _dsn(name)
    finally:
        try:
            await _ready(within=30)
        except TimeoutError:
            await _cluster("start")
            await _ready()
        admin = await asyncpg.connect(_dsn())
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def settled(slack: FakeSlack, root: Message) -> Message | None:
    """The bot's first reply in the thread once it is an answer or a notice."""
    replies = slack.bot_replies(root.channel, root.ts)
    done = replies and (replies[0].buttons or "⚠️" in replies[0].shown)
    return replies[0] if done else None


async def test_the_bot_rides_out_a_postgres_restart_under_load(
    restartable_postgres: str, fake_slack: FakeSlack, fake_tgi: FakeTGI
) -> None:
    url, slack, tgi = restartable_postgres, fake_slack, fake_tgi
    await upgrade(url)
    tgi.token_delay = 0.05
    tgi.reply = REPLY
    settings = slack_settings(slack, tgi, url, connect_timeout=2.0, spool_retry_interval=0.2)
    engine = await Engine.open(settings)
    adapter = create_adapter(engine, settings, RunOptions(mode="http", port=0))
    await adapter.start()
    slack.events_url = adapter.url
    mention = f"<@{slack.bot_user_id}>"
    try:
        roots = list(
            await asyncio.gather(
                *(
                    slack.user_posts(f"{mention} question {n}", user=f"U0P{n}")
                    for n in range(THREADS)
                )
            )
        )
        await slack.wait_for(lambda: all(slack.bot_replies(r.channel, r.ts) for r in roots))

        await _cluster("stop")  # the restart's first half, while every answer is streaming
        try:
            late = await slack.user_posts(f"{mention} anyone home?", user="U0LATE")
            (kept,) = await slack.wait_for(lambda: slack.bot_replies(late.channel, late.ts), 30)
            firsts = await asyncio.gather(
                *(slack.wait_for(lambda r=r: settled(slack, r), 30) for r in roots)
            )
            assert engine.spool is not None and len(engine.spool) == 1
        finally:
            tgi.token_delay = 0.005
            tgi.reply = " Back again."
            await _cluster("start")
            await _ready()
        back = datetime.now(UTC)
        # The message kept while the database was down is answered without being sent again.
        answer_to_kept = await slack.wait_for(lambda: answered_again(slack, late), 30)
        assert len(engine.spool) == 0

        for n, root in enumerate(roots):
            await slack.user_posts(f"{mention} again {n}", user=f"U0P{n}", thread_ts=root.ts)
        await slack.user_posts(f"{mention} anyone home now?", user="U0LATE", thread_ts=late.ts)
        seconds = await asyncio.gather(
            *(slack.wait_for(lambda r=r: answered_again(slack, r), 30) for r in roots)
        )
        await slack.wait_for(
            lambda: len([m for m in slack.bot_replies(late.channel, late.ts) if m.buttons]) == 2,
            30,
        )
        await slack.settle()
    finally:
        await adapter.stop()
        await engine.close()

    memory = "I could not reach my memory"
    assert memory in kept.shown and "kept your message" in kept.shown
    assert answer_to_kept.shown == "Back again." and answer_to_kept.buttons
    for first in firsts:  # the answer, with a notice that it could not be saved
        assert first.shown.startswith("Eucalyptus") and memory in first.shown
        assert not first.buttons
    for root, second in zip(roots, seconds, strict=True):
        assert second.shown == "Back again."
        assert len(slack.bot_replies(root.channel, root.ts)) == 2  # nothing twice
    # The late thread: the notice, the kept message's answer, then the answer to the next one.
    assert [m.shown for m in slack.bot_replies(late.channel, late.ts)] == [
        kept.shown,
        "Back again.",
        "Back again.",
    ]
    conn = await asyncpg.connect(url)
    try:
        users = {r["text"] for r in await conn.fetch("SELECT text FROM messages WHERE role='user'")}
        late_thread = await conn.fetch(
            "SELECT u.text, u.created_at FROM messages a JOIN messages u ON a.parent_id = u.id "
            "WHERE a.role = 'assistant' AND a.status = 'ok' AND u.author = 'U0LATE' ORDER BY a.id"
        )
        twice = await conn.fetchval(
            "SELECT count(*) FROM (SELECT parent_id FROM messages WHERE role = 'assistant' "
            "AND status = 'ok' GROUP BY parent_id HAVING count(*) > 1) AS t"
        )
    finally:
        await conn.close()
    asked = {f"question {n}" for n in range(THREADS)} | {f"again {n}" for n in range(THREADS)}
    assert users == asked | {"anyone home?", "anyone home now?"}  # every message is kept
    # Each late message answered once, in order; the kept one stamped when it arrived.
    assert [r["text"] for r in late_thread] == ["anyone home?", "anyone home now?"]
    assert late_thread[0]["created_at"].replace(tzinfo=UTC) < back
    assert twice == 0


def answered_again(slack: FakeSlack, root: Message) -> Message | None:
    """A finished answer after the first reply in the thread."""
    later = [m for m in slack.bot_replies(root.channel, root.ts)[1:] if m.buttons]
    return later[0] if later else None
