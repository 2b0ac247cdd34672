"""`koalabot forget`: a user's data leaves every table; idle conversations are purged whole."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from koalabot.cli import main
from koalabot.store.database import Database
from koalabot.store.forget import forget_user
from koalabot.store.models import Base, Feedback, Generation, Message
from tests.helpers_data import Seed, table_rows


async def koalabot(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def everything(db: Database) -> str:
    """Every row of every table, as one text to search."""
    dump = {t.name: await table_rows(db, t) for t in Base.metadata.sorted_tables}
    return json.dumps(dump, default=str)


async def two_users(db: Database) -> dict[str, int]:
    seed = Seed(db)
    shared = await seed.thread(platform="slack")
    mine = await shared.ask("my secret question", author="U0FORGET1")
    first = await shared.answer("an answer to the secret")
    await shared.vote(first, "U0OTHER01", 1)
    await shared.ask("someone else asks", author="U0OTHER01")
    later = await shared.answer("a later answer")  # its prompt quotes the secret question
    await shared.vote(later, "U0FORGET1", -1)
    await shared.vote(later, "U0OTHER01", 1)
    alone = await seed.thread(platform="slack")
    await alone.ask("my own thread", author="U0FORGET1")
    await alone.answer("only for me")
    elsewhere = await seed.thread(platform="discord")
    await elsewhere.ask("same id, other platform", author="U0FORGET1")
    kept = await elsewhere.answer("kept")
    await elsewhere.vote(kept, "U0FORGET1", 1)
    return {"mine": mine, "first": first, "later": later, "kept": kept}


async def test_forget_user_leaves_nothing_of_theirs(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = await two_users(db)

    code = await koalabot("forget", "--user", "slack:U0FORGET1", "--database-url", db.url)

    assert code == 0
    assert capsys.readouterr().out == (
        "forget slack:U0FORGET1: deleted 2 user messages, 2 answers, 2 votes, "
        "2 generation records, 1 stored prompt emptied, 1 conversation, "
        "2 platform message links, 0 delivery ids, 0 kept messages and votes\n"
    )
    text = await everything(db)
    for gone in ("my secret question", "an answer to the secret", "my own thread", "only for me"):
        assert gone not in text
    messages = await table_rows(db, Message)
    assert [m["text"] for m in messages] == [
        "someone else asks",
        "a later answer",
        "same id, other platform",
        "kept",
    ]
    # Still there: the same id on Discord, and the other user's thread, prompt emptied.
    assert {m["author"] for m in messages if m["role"] == "user"} == {"U0OTHER01", "U0FORGET1"}
    votes = await table_rows(db, Feedback)
    assert {(v["message_id"], v["user"]) for v in votes} == {
        (ids["later"], "U0OTHER01"),
        (ids["kept"], "U0FORGET1"),
    }
    prompts = {g["message_id"]: g["prompt"] for g in await table_rows(db, Generation)}
    assert prompts[ids["later"]] == ""
    assert prompts[ids["kept"]].endswith("USER: same id, other platform GPT:")


async def test_forget_dry_run_changes_nothing(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    await two_users(db)
    before = await everything(db)

    code = await koalabot(
        "forget", "--user", "slack:U0FORGET1", "--dry-run", "--database-url", db.url
    )

    assert code == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("forget slack:U0FORGET1: would delete 2 user messages")
    assert "nothing was changed" in captured.err
    assert await everything(db) == before


async def test_forget_counts_nothing_for_an_unknown_user(db: Database) -> None:
    await two_users(db)
    before = await everything(db)

    counts = await forget_user(db, "slack", "U0NOBODY")

    assert counts.user_messages == counts.answers == counts.votes == 0
    assert await everything(db) == before


async def test_older_than_purges_idle_conversations_whole(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    seed = Seed(db)
    idle = await seed.thread(at=now - timedelta(days=90))
    await idle.ask("an old question", at=now - timedelta(days=90))
    old = await idle.answer("an old answer", at=now - timedelta(days=89))
    await idle.vote(old, "U2", 1)
    active = await seed.thread(at=now - timedelta(days=90))
    await active.ask("started long ago", at=now - timedelta(days=90))
    await active.answer("long ago", at=now - timedelta(days=90))
    await active.ask("still talking", at=now - timedelta(days=1))
    await active.answer("yes", at=now - timedelta(days=1))

    code = await koalabot("forget", "--older-than", "30", "--database-url", db.url)

    assert code == 0
    out = capsys.readouterr().out
    assert "deleted 1 user message, 1 answer, 1 vote, 1 generation record" in out
    assert "1 conversation," in out
    text = await everything(db)
    assert "an old question" not in text and "an old answer" not in text
    assert [m["text"] for m in await table_rows(db, Message)] == [
        "started long ago",
        "long ago",
        "still talking",
        "yes",
    ]


async def test_forget_needs_a_well_formed_user(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        await koalabot("forget", "--user", "U0FORGET1")
    assert exited.value.code == 2
    assert "is not PLATFORM:ID" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        await koalabot("forget", "--older-than", "-3")
