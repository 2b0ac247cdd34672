"""What the store refuses is not an outage (issue 16, item 4), on SQLite and PostgreSQL: a kept
vote the database refuses is set aside (counted, logged without its text) and never holds the
others up; /healthz reports a spool whose oldest item waited too long; `koalabot forget` deletes
a person's kept and set-aside messages and votes from the spool file."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from koalabot.cli import main
from koalabot.config import load_settings
from koalabot.engine.engine import Engine
from koalabot.events import ChatMessage, FeedbackEvent, ThreadKey
from koalabot.http import ops_app
from koalabot.store.spool import Spool
from tests.fakes.tgi import FakeTGI
from tests.reliability.sinks import Recorder
from tests.reliability.test_log_privacy import _healthz as healthz

THREAD = ThreadKey("slack", "T1", "C1", "1.0")
SECRET = "alice's secret plan"


async def open_engine(url: str, tgi: FakeTGI, spool: Path, **settings: object) -> Engine:
    return await Engine.open(
        load_settings(
            None, database_url=url, tgi_url=tgi.url, notice="", spool_path=str(spool), **settings
        )
    )


async def health(engine: Engine) -> dict[str, object]:
    """GET /healthz from the engine's HTTP application on a real port."""
    body: dict[str, object] = json.loads(await healthz(ops_app(engine)))
    return body


async def test_a_kept_vote_the_database_refuses_is_set_aside_and_the_others_go_on(
    migrated_database_url: str,
    fake_tgi: FakeTGI,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    spool_path = tmp_path / "spool.db"
    engine = await open_engine(migrated_database_url, fake_tgi, spool_path)
    try:
        asked = await engine.handle_message(ChatMessage(THREAD, "U1", "Hi?", "1.1"), Recorder())
        answer_id = asked.answer_id
        assert answer_id is not None
        # Kept while the database was away: a vote naming an answer id no database column can
        # hold (refused every time), then a good one, behind it.
        assert engine.spool is not None
        then = datetime.now(UTC) - timedelta(minutes=1)
        engine.spool.add_vote(FeedbackEvent("slack", "U9", 1, answer_id=2**70), then)
        # A click counts only from the message that shows the answer (issue 16, item 2).
        shown = {"channel": THREAD.channel, "platform_message_id": asked.message_ids[0]}
        engine.spool.add_vote(FeedbackEvent("slack", "U2", -1, answer_id=answer_id, **shown), then)

        with caplog.at_level(logging.INFO):
            result = await engine.handle_feedback(
                FeedbackEvent("slack", "U3", 1, answer_id=answer_id, **shown)
            )

        assert result.recorded
        assert await engine.repo.votes(answer_id) == {"U2": -1, "U3": 1}
        assert engine.spool.pending_votes() == []
        metric = engine.metrics.registry.get_sample_value
        assert metric("koalabot_spool_set_aside_total", {"kind": "vote"}) == 1
        assert "a vote kept since" in caplog.text and "set aside" in caplog.text
    finally:
        await engine.close()


async def test_healthz_reports_a_spool_whose_oldest_item_waited_too_long(
    migrated_database_url: str, fake_tgi: FakeTGI, tmp_path: Path
) -> None:
    spool_path = tmp_path / "spool.db"
    kept = Spool(spool_path, limit=10)
    kept.add(ChatMessage(THREAD, "U1", SECRET, "1.1"), datetime.now(UTC) - timedelta(minutes=10))
    kept.close()
    engine = await open_engine(migrated_database_url, fake_tgi, spool_path, spool_max_age=120)
    try:
        body = await health(engine)
        assert body["status"] == "unhealthy"
        problems = body["problems"]
        assert isinstance(problems, dict) and set(problems) == {"spool"}
        assert problems["spool"].startswith("the oldest kept message or vote has waited 6")
        assert SECRET not in json.dumps(body)
        age = engine.metrics.registry.get_sample_value("koalabot_spool_oldest_age_seconds")
        assert age is not None and age >= 600
    finally:
        await engine.close()

    young = await open_engine(migrated_database_url, fake_tgi, spool_path, spool_max_age=3600)
    try:
        assert await health(young) == {"status": "ok"}
    finally:
        await young.close()


async def test_forget_deletes_the_persons_kept_and_set_aside_messages_and_votes(
    migrated_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool_path = tmp_path / "koalabot-spool.db"  # where the CLI looks in tests (conftest)
    spool = Spool(spool_path, limit=100)
    now = datetime.now(UTC)
    spool.add(ChatMessage(THREAD, "U0ALICE", SECRET, "1.1"), now)
    spool.add(ChatMessage(THREAD, "U0BOB", "bob asks", "1.2"), now)
    spool.add(ChatMessage(ThreadKey("discord", "G", "C", "T"), "U0ALICE", "same id", "9"), now)
    aside = spool.add(ChatMessage(THREAD, "U0ALICE", f"{SECRET} (aside)", "1.3"), now)
    assert aside is not None
    spool.set_aside(aside)
    spool.add_vote(FeedbackEvent("slack", "U0ALICE", 1, answer_id=7), now)
    spool.add_vote(FeedbackEvent("slack", "U0BOB", 1, answer_id=7), now)
    spool.close()

    argv = ["forget", "--user", "slack:U0ALICE", "--database-url", migrated_database_url]
    assert await asyncio.to_thread(main, argv) == 0

    assert capsys.readouterr().out.endswith(", 3 kept messages and votes\n")
    again = Spool(spool_path, limit=100)
    assert [(p.message.user, p.message.text) for p in again.pending()] == [
        ("U0BOB", "bob asks"),
        ("U0ALICE", "same id"),
    ]
    assert [k.vote.user for k in again.pending_votes()] == ["U0BOB"]
    again.close()
    # Not even in the file's free pages.
    assert b"secret plan" not in spool_path.read_bytes()


async def test_a_vote_the_database_refuses_is_not_kept_for_later(
    migrated_database_url: str, fake_tgi: FakeTGI, tmp_path: Path
) -> None:
    engine = await open_engine(migrated_database_url, fake_tgi, tmp_path / "spool.db")
    try:
        # A button value no database column can hold: refused now, refused forever.
        result = await engine.handle_feedback(FeedbackEvent("slack", "U9", 1, answer_id=2**70))
        assert not result.recorded and not result.kept
        assert engine.spool is not None and engine.spool.votes_waiting() == 0
    finally:
        await engine.close()


async def test_a_kept_message_with_a_nul_byte_is_stored_and_its_thread_goes_on(
    migrated_database_url: str, fake_tgi: FakeTGI, tmp_path: Path
) -> None:
    # An earlier process kept two messages of one thread; the first holds a NUL byte, which
    # PostgreSQL refuses as it stands (it was retried forever, the second waiting behind it).
    spool_path = tmp_path / "spool.db"
    kept = Spool(spool_path, limit=10)
    then = datetime.now(UTC) - timedelta(minutes=1)
    kept.add(ChatMessage(THREAD, "U1", "koalas\x00?", "1.1", ("ev1",)), then)
    kept.add(ChatMessage(THREAD, "U1", "and wombats?", "1.2", ("ev2",)), then)
    kept.close()
    fake_tgi.replies.extend([" Koalas.", " Wombats."])
    engine = await open_engine(
        migrated_database_url, fake_tgi, spool_path, spool_retry_interval=0.05
    )
    sink = Recorder()
    try:
        engine.platform_connected("slack", lambda where: sink)
        await sink.wait_for(lambda: "Wombats." in sink.shown.values(), 20)
        said = [t.content for t in await engine.transcript(THREAD) if t.role == "user"]
        assert said == ["koalas\N{REPLACEMENT CHARACTER}?", "and wombats?"]
        assert "Koalas." in sink.shown.values()
        assert engine.spool is not None and len(engine.spool) == 0
    finally:
        await engine.close()
