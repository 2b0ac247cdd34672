"""koalabot.engine.backlog (with the spool it drains, koalabot.store.spool): messages that arrive
while the database cannot take them are kept on local disk and answered once it can: the person
is told, need not send anything again, and the message is stored with the time it arrived.
PostgreSQL going down under the Slack bot is in tests/reliability/test_postgres_restart.py;
`koalabot run` answering what an earlier process kept is in tests/cli/test_run.py."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from koalabot.config import load_settings
from koalabot.engine.engine import SPOOLED, Engine
from koalabot.events import AnswerResult, ChatMessage, FeedbackEvent, ThreadKey
from koalabot.store.spool import Spool, SpoolError
from tests.fakes.tgi import FakeTGI
from tests.fixtures.db import eventually, write_locked
from tests.reliability.sinks import Recorder

THREAD = ThreadKey("slack", "T1", "C1", "1.0")


def message(text: str, ts: str, *keys: str) -> ChatMessage:
    return ChatMessage(THREAD, "U1", text, ts, keys)


def button_vote(user: str, rating: int, asked: AnswerResult) -> FeedbackEvent:
    """A click on a vote button under the answer ``asked``."""
    shown = asked.message_ids[-1]
    return FeedbackEvent(
        "slack", user, rating, answer_id=asked.answer_id, channel="C1", platform_message_id=shown
    )


def test_the_spool_keeps_messages_in_order_across_processes_and_drops_redeliveries(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    first = Spool(path, limit=10)
    assert first.pending() == [] and not path.exists()  # nothing on disk until needed
    arrived = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
    kept = first.add(message("Are you there?", "1.1", "ev1", "C1:1.1"), arrived)
    assert kept is not None
    assert first.add(message("Are you there?", "1.1", "ev2", "C1:1.1"), arrived) is None
    first.add(message("Hello?", "1.2", "ev3"), arrived + timedelta(seconds=5))
    first.close()

    again = Spool(path, limit=10)  # the bot restarted
    pending = again.pending()
    assert [(p.message.text, p.received_at) for p in pending] == [
        ("Are you there?", arrived),
        ("Hello?", arrived + timedelta(seconds=5)),
    ]
    assert pending[0].message == message("Are you there?", "1.1", "ev1", "C1:1.1")
    again.done(pending[0])
    assert [p.message.text for p in again.pending()] == ["Hello?"]
    # Once stored, a message's delivery ids are the store's to check, not the spool's.
    assert again.add(message("Are you there?", "1.1", "ev1"), arrived) is not None
    again.close()


def test_a_kept_thread_message_keeps_the_channel_its_thread_was_opened_from(
    tmp_path: Path,
) -> None:
    """A Discord thread's parent channel survives the spool: KOALABOT_ALLOWED_CHANNELS and
    KOALABOT_BATTLE_CHANNELS still reach the message when it is answered later."""
    in_thread = ThreadKey("discord", "G1", "T9", "T9", parent="C1")
    first = Spool(tmp_path / "spool.db", limit=10)
    first.add(ChatMessage(in_thread, "U1", "Hello?", "m1", ("m1",)), datetime.now(UTC))
    first.close()

    again = Spool(tmp_path / "spool.db", limit=10)
    (kept,) = again.pending()
    again.close()

    assert kept.message.where.parent == "C1" and kept.message.where.within(["C1"])


def test_the_spool_keeps_votes_in_the_order_they_were_cast(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    first = Spool(path, limit=10)
    cast = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
    up = FeedbackEvent("slack", "U1", 1, answer_id=7)
    taken_back = FeedbackEvent(
        "slack", "U1", 1, channel="C1", platform_message_id="1.5", removed=True
    )
    first.add_vote(up, cast)
    first.add_vote(taken_back, cast + timedelta(seconds=1))
    assert first.votes_waiting() == 2
    first.close()

    again = Spool(path, limit=10)
    kept = again.pending_votes()
    assert [(k.vote, k.received_at) for k in kept] == [
        (up, cast),
        (taken_back, cast + timedelta(seconds=1)),
    ]
    again.vote_done(kept[0])
    assert again.votes_waiting() == 1 and [k.vote for k in again.pending_votes()] == [taken_back]
    again.close()


def test_a_full_spool_says_so(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", limit=2)
    now = datetime.now(UTC)
    spool.add(message("one", "1.1"), now)
    spool.add_vote(FeedbackEvent("slack", "U1", 1, answer_id=7), now)
    with pytest.raises(SpoolError, match=r"is full \(2 messages and votes\)") as raised:
        spool.add(message("three", "1.3"), now)
    assert "send it again" in raised.value.user_message
    with pytest.raises(SpoolError, match="is full"):
        spool.add_vote(FeedbackEvent("slack", "U2", 1, answer_id=7), now)
    assert len(spool) == 1 and spool.votes_waiting() == 1
    spool.close()


def waiting(engine: Engine) -> float:
    """The spool's gauge on /metrics."""
    value = engine.metrics.registry.get_sample_value("koalabot_spooled_messages")
    assert value is not None
    return value


async def open_engine(db: Path | str, tgi: FakeTGI, **settings: object) -> Engine:
    """An engine on a SQLite file (or a database URL) and the fake TGI (which answers
    "You said: <question>")."""
    url = f"sqlite:///{db}" if isinstance(db, Path) else db
    return await Engine.open(
        load_settings(None, database_url=url, tgi_url=tgi.url, notice="", **settings)
    )


async def test_a_message_the_locked_database_cannot_take_is_answered_once_it_can(
    tmp_path: Path, fake_tgi: FakeTGI
) -> None:
    db_path = tmp_path / "koalabot.db"
    engine = await open_engine(db_path, fake_tgi, spool_retry_interval=0.05)
    sink = Recorder()
    try:
        asked = await engine.handle_message(message("First question?", "1.1", "ev1"), sink)
        assert asked.status == "ok"
        with write_locked(db_path):
            before = datetime.now(UTC)
            # The database waits for its lock (5 s), then gives up: the message is kept.
            kept = await engine.handle_message(message("Second question?", "1.2", "ev2"), sink)
            assert engine.spool is not None and len(engine.spool) == 1
            assert waiting(engine) == 1
            await asyncio.sleep(0.2)  # retries meanwhile fail: nothing is answered yet
            assert list(sink.shown.values()).count("You said: Second question?") == 0
        await sink.wait_for(lambda: "You said: Second question?" in sink.shown.values(), 30)
        await asyncio.sleep(0.1)
        assert len(engine.spool) == 0 and waiting(engine) == 0
        transcript = await engine.transcript(THREAD)
        metric = engine.metrics.registry.get_sample_value
        answered = metric("koalabot_messages_answered_total", {"platform": "slack"})
        kept_count = metric(
            "koalabot_messages_failed_total", {"platform": "slack", "reason": "spooled"}
        )
    finally:
        await engine.close()

    assert kept.status == "spooled"
    assert sink.notices == [SPOOLED]
    assert (answered, kept_count) == (2, 1)  # the kept message counts as answered once it is
    assert [(t.role, t.content) for t in transcript] == [
        ("user", "First question?"),
        ("assistant", "You said: First question?"),
        ("user", "Second question?"),
        ("assistant", "You said: Second question?"),
    ]
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        (stamp,) = conn.execute(
            "SELECT created_at FROM messages WHERE text = 'Second question?'"
        ).fetchone()
    # Stamped when it arrived, not when the database took it some seconds later.
    arrived = datetime.fromisoformat(stamp).replace(tzinfo=UTC)
    assert before <= arrived < before + timedelta(seconds=2)


async def test_a_kept_message_keeps_its_place_before_the_next_one_in_its_thread(
    tmp_path: Path, fake_tgi: FakeTGI
) -> None:
    db_path = tmp_path / "koalabot.db"
    # The spool's own retries would come far too late.
    engine = await open_engine(db_path, fake_tgi, spool_retry_interval=3600)
    sink = Recorder()
    try:
        await engine.handle_message(message("First question?", "1.1", "ev1"), sink)
        with write_locked(db_path):
            kept = await engine.handle_message(message("Second question?", "1.2", "ev2"), sink)
        # The database is back; the person goes on before the spool has tried it again.
        third = await engine.handle_message(message("Third question?", "1.3", "ev3"), sink)
        await sink.wait_for(lambda: "You said: Second question?" in sink.shown.values(), 30)
        transcript = await engine.transcript(THREAD)
        assert engine.spool is not None and len(engine.spool) == 0
    finally:
        await engine.close()

    assert kept.status == "spooled" and third.status == "ok"
    assert [(t.role, t.content) for t in transcript] == [
        ("user", "First question?"),
        ("assistant", "You said: First question?"),
        ("user", "Second question?"),
        ("assistant", "You said: Second question?"),
        ("user", "Third question?"),
        ("assistant", "You said: Third question?"),
    ]


async def test_without_a_spool_the_person_is_asked_to_send_it_again(
    tmp_path: Path, fake_tgi: FakeTGI
) -> None:
    db_path = tmp_path / "koalabot.db"
    engine = await open_engine(db_path, fake_tgi, spool_path="")
    sink = Recorder()
    try:
        await engine.handle_message(message("First question?", "1.1", "ev1"), sink)
        with write_locked(db_path):
            refused = await engine.handle_message(message("Second?", "1.2", "ev2"), sink)
    finally:
        await engine.close()
    assert refused.status == "failed"
    assert sink.notices and "Please try again" in sink.notices[0]


async def test_a_vote_the_locked_database_cannot_take_is_recorded_once_it_can(
    tmp_path: Path, fake_tgi: FakeTGI
) -> None:
    db_path = tmp_path / "koalabot.db"
    engine = await open_engine(db_path, fake_tgi, spool_retry_interval=0.05)
    try:
        asked = await engine.handle_message(message("First question?", "1.1", "ev1"), Recorder())
        answer_id = asked.answer_id
        assert answer_id is not None
        with write_locked(db_path):
            cast = datetime.now(UTC)
            up = button_vote("U2", 1, asked)
            kept = await engine.handle_feedback(up)
            assert await engine.repo.votes(asked.answer_id) == {}
        await eventually(lambda: engine.repo.votes(answer_id), {"U2": 1}, within=30)
        assert engine.spool is not None and engine.spool.votes_waiting() == 0
    finally:
        await engine.close()

    assert kept.kept and not kept.recorded and kept.rating == 1
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        (stamp,) = conn.execute("SELECT created_at FROM feedback").fetchone()
    # Stamped when it was cast, not when the database took it some seconds later.
    assert cast <= datetime.fromisoformat(stamp).replace(tzinfo=UTC) < cast + timedelta(seconds=2)


async def test_a_kept_vote_never_overrides_a_later_one(tmp_path: Path, fake_tgi: FakeTGI) -> None:
    db_path = tmp_path / "koalabot.db"
    # The spool's own retries would come far too late.
    engine = await open_engine(db_path, fake_tgi, spool_retry_interval=3600)
    try:
        asked = await engine.handle_message(message("First question?", "1.1", "ev1"), Recorder())
        assert asked.answer_id is not None
        with write_locked(db_path):
            kept = await engine.handle_feedback(button_vote("U2", 1, asked))
        # The database is back; the person changes their mind before the spool tries again.
        later = await engine.handle_feedback(button_vote("U2", -1, asked))
        votes = await engine.repo.votes(asked.answer_id)
        assert engine.spool is not None and engine.spool.votes_waiting() == 0
    finally:
        await engine.close()
    assert kept.kept and later.recorded
    assert votes == {"U2": -1}


async def test_a_spool_path_that_cannot_be_written_is_named_at_start(
    tmp_path: Path, fake_tgi: FakeTGI, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "no-such-folder" / "spool.db"
    with caplog.at_level("WARNING", logger="koalabot.engine.engine"):
        engine = await open_engine(tmp_path / "koalabot.db", fake_tgi, spool_path=str(missing))
        await engine.close()
    (warning,) = [r.getMessage() for r in caplog.records if "KOALABOT_SPOOL_PATH" in r.getMessage()]
    assert f"its folder {missing.parent} does not exist" in warning
    assert not missing.parent.exists()


async def test_a_kept_message_stored_just_before_a_stop_is_answered_once(
    migrated_database_url: str, fake_tgi: FakeTGI, _spool_in_tmp_path: Path
) -> None:
    url = migrated_database_url
    other = ThreadKey("slack", "T1", "C1", "2.0")
    arrived = datetime.now(UTC) - timedelta(minutes=1)
    spool = Spool(_spool_in_tmp_path, limit=10)
    unanswered = spool.add(message("Still there?", "1.2", "ev2"), arrived)
    answered = spool.add(ChatMessage(other, "U1", "Answered?", "2.1", ("ev3",)), arrived)
    assert unanswered is not None and answered is not None
    spool.close()
    # The bot that kept them stopped after storing both (and answering one) but before the spool
    # forgot them.
    before = await open_engine(url, fake_tgi, spool_path="")
    try:
        keys = ("ev2", unanswered.key)
        await before.repo.add_user_message(THREAD, "U1", "Still there?", "1.2", keys)
        msg = ChatMessage(other, "U1", "Answered?", "2.1", ("ev3", answered.key))
        assert (await before.handle_message(msg, Recorder())).status == "ok"
    finally:
        await before.close()

    engine = await open_engine(url, fake_tgi, spool_retry_interval=0.05)
    sinks = {THREAD: Recorder(), other: Recorder()}
    try:
        engine.platform_connected("slack", sinks.__getitem__)
        await sinks[THREAD].wait_for(
            lambda: "You said: Still there?" in sinks[THREAD].shown.values()
        )
        await asyncio.sleep(0.3)  # the spool comes round a few more times
        assert engine.spool is not None and len(engine.spool) == 0
        transcripts = [await engine.transcript(where) for where in (THREAD, other)]
    finally:
        await engine.close()
    assert list(sinks[THREAD].shown.values()) == ["You said: Still there?"]
    assert sinks[other].shown == {}  # it had its answer: not answered twice
    assert [len(t) for t in transcripts] == [2, 2]


async def test_what_is_kept_when_the_bot_stops_waits_in_the_spool_for_the_next_process(
    tmp_path: Path, fake_tgi: FakeTGI
) -> None:
    db_path = tmp_path / "koalabot.db"
    engine = await open_engine(db_path, fake_tgi, spool_retry_interval=0.05)
    try:
        await engine.handle_message(message("First question?", "1.1", "ev1"), Recorder())
        with write_locked(db_path):
            kept = await engine.handle_message(
                message("Second question?", "1.2", "ev2"), Recorder()
            )
            assert await engine.shutdown(grace=1.0) == 0
        engine.platform_connected("slack", lambda where: Recorder())  # too late: stopping
        await asyncio.sleep(0.5)  # the store is back, but this process replays no more
        assert engine.spool is not None and len(engine.spool) == 1
        before_restart = await engine.transcript(THREAD)
    finally:
        await engine.close()

    again = await open_engine(db_path, fake_tgi, spool_retry_interval=0.05)
    sink = Recorder()
    try:
        again.platform_connected("slack", lambda where: sink)
        await sink.wait_for(lambda: "You said: Second question?" in sink.shown.values())
        after_restart = await again.transcript(THREAD)
    finally:
        await again.close()
    assert kept.status == "spooled"
    assert [t.content for t in before_restart] == ["First question?", "You said: First question?"]
    assert [t.content for t in after_restart][2:] == [
        "Second question?",
        "You said: Second question?",
    ]
