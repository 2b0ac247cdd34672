"""The repository's public behaviour, on SQLite and PostgreSQL: what the engine stores and reads
back for one thread (messages, pages, answers with their generation, votes, consent), and the
thread lock that keeps two replicas from answering in one thread at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from koalabot.events import ThreadKey
from koalabot.store import records
from koalabot.store import repository as facade
from koalabot.store.database import Database, open_database
from koalabot.store.repository import GenerationRecord, Repository
from koalabot.store.waiting import find_unanswered

WHERE = ThreadKey("slack", "T1", "C1", "100.1")
RECORD = GenerationRecord(
    prompt="BEGINNING OF CONVERSATION: USER: hi GPT:",
    template="koala",
    parameters={"max_new_tokens": 64},
    model_id="koala-13b",
    finish_reason="eos_token",
)


@pytest.fixture
async def repo(db: Database) -> AsyncIterator[Repository]:
    repository = Repository(db)
    try:
        yield repository
    finally:
        await repository.close()


async def ask(repo: Repository, text: str, delivery: str) -> tuple[int, int]:
    stored = await repo.add_user_message(WHERE, "U1", text, f"{delivery}.ts", [delivery])
    assert stored is not None
    return stored


async def test_a_message_is_stored_once_per_delivery(repo: Repository) -> None:
    conversation, message = await ask(repo, "hello", "ev-1")
    assert await repo.add_user_message(WHERE, "U1", "hello", "ev-1.ts", ["ev-1"]) is None
    assert await repo.conversation_id(WHERE) == conversation
    assert await repo.latest_thread("slack", "T1", "C1") == "100.1"
    [stored] = await repo.history(conversation)
    assert (stored.id, stored.role, stored.text, stored.status) == (message, "user", "hello", "ok")


async def test_history_pages_newest_first_and_counts_what_is_older(repo: Repository) -> None:
    ids = [(await ask(repo, f"m{n}", f"ev-{n}"))[1] for n in range(5)]
    conversation = await repo.ensure_conversation(WHERE)
    first = await repo.history_page(conversation, limit=2)
    assert [m.text for m in first.messages] == ["m4", "m3"]
    assert first.older == 3
    second = await repo.history_page(conversation, before_id=ids[3], limit=2)
    assert [m.text for m in second.messages] == ["m2", "m1"]
    assert second.older == 1


async def test_an_answer_is_recorded_with_how_it_was_made(repo: Repository) -> None:
    conversation, question = await ask(repo, "hi", "ev-1")
    start = await repo.start_answer(conversation, question, "2.0", tail=10)
    assert start.first, "the thread's first answer"
    assert start.tail is not None
    assert [(m.role, m.status) for m in start.tail.messages] == [
        ("assistant", "streaming"),
        ("user", "ok"),
    ]
    await repo.finish_answer(start.answer_id, "Hello!", "ok", RECORD, WHERE, ["2.0", "2.1"])
    assert await repo.generation(start.answer_id) == RECORD
    assert await repo.answer_by_ref("slack", "C1", "2.1") == start.answer_id
    info = await repo.answer(start.answer_id)
    assert info is not None
    assert (info.conversation_id, info.parent_id, info.where) == (conversation, question, WHERE)
    _, again = await ask(repo, "more", "ev-2")
    assert not (await repo.start_answer(conversation, again)).first


async def test_the_latest_vote_of_a_user_wins(repo: Repository) -> None:
    conversation, question = await ask(repo, "hi", "ev-1")
    answer = (await repo.start_answer(conversation, question)).answer_id
    await repo.vote(answer, "U1", 1)
    await repo.vote(answer, "U1", -1)
    await repo.vote(answer, "U2", 1)
    assert await repo.votes(answer) == {"U1": -1, "U2": 1}
    assert not await repo.unvote(answer, "U1", 1), "a reaction removed after the vote changed"
    assert await repo.unvote(answer, "U1", -1)
    assert await repo.votes(answer) == {"U2": 1}


async def test_a_declined_message_holds_no_later_one_up(repo: Repository) -> None:
    conversation, first = await ask(repo, "one", "ev-1")
    _, second = await ask(repo, "two", "ev-2")
    assert await repo.earlier_waiting(conversation, second)
    assert await repo.unanswered(["ev-1"]) == (conversation, first)
    await repo.decline(first)
    assert not await repo.earlier_waiting(conversation, second)
    assert await repo.unanswered(["ev-1"]) is None


async def test_opting_out_is_remembered(repo: Repository) -> None:
    assert not await repo.is_opted_out("slack:U1")
    await repo.opt_out("slack:U1")
    await repo.opt_out("slack:U1")
    assert await repo.is_opted_out("slack:U1")


async def test_an_answer_left_streaming_by_a_crash_is_recovered_once(repo: Repository) -> None:
    conversation, question = await ask(repo, "hi", "ev-1")
    answer = (await repo.start_answer(conversation, question, "2.0")).answer_id
    assert await repo.recover_interrupted() == [records.Orphan(answer, WHERE, "2.0")]
    assert await repo.recover_interrupted() == []
    [latest, _] = await repo.history(conversation)
    assert latest.status == "interrupted"


async def test_a_thread_s_parent_channel_comes_back_from_every_read_of_it(
    repo: Repository, db: Database
) -> None:
    """A Discord thread's parent channel is stored with it: the answer's, the crash's and the
    waiting message's thread keys read back from the store all carry it (channel settings
    reach clicks and answers after a restart)."""
    thread = ThreadKey("discord", "G1", "T9", "T9", parent="C1")
    stored = await repo.add_user_message(thread, "U1", "hi", "m1", ["m1"])
    assert stored is not None
    conversation, question = stored
    waiting = await find_unanswered(db, timedelta(0))
    answer = (await repo.start_answer(conversation, question, "2.0")).answer_id
    info = await repo.answer(answer)
    [orphan] = await repo.recover_interrupted()

    assert [w.where.parent for w in waiting] == ["C1"]
    assert info is not None and info.where.parent == "C1" and info.where == thread
    assert orphan.where.parent == "C1"


async def test_a_thread_lock_makes_another_replica_wait_on_postgresql(db: Database) -> None:
    first = Repository(db)
    other_db = await open_database(db.url)
    second = Repository(other_db)
    conversation, question = await ask(first, "hi", "ev-1")
    entered = asyncio.Event()

    async def answer_elsewhere() -> None:
        async with second.thread_lock(conversation):
            entered.set()

    try:
        async with first.thread_lock(conversation):
            waiting = asyncio.create_task(answer_elsewhere())
            await asyncio.sleep(0.3)
            # SQLite has one writer process: its engine's in-process lock is the only one.
            assert entered.is_set() == (db.dialect == "sqlite")
            if db.dialect == "postgresql":
                await first.start_answer(conversation, question)
                assert await second.recover_interrupted() == [], "a replica is answering there"
        await asyncio.wait_for(waiting, 10)
        assert entered.is_set()
    finally:
        await first.close()
        await second.close()
        await other_db.close()


def test_the_repository_hands_out_the_store_records() -> None:
    for name in records.__all__:
        assert getattr(facade, name) is getattr(records, name)
    assert set(records.__all__) <= set(facade.__all__)
