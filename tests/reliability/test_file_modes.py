"""Files the bot creates are private (0600) whatever the umask: the SQLite database and its
WAL and shared-memory files, the spool, and exports."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from koalabot.cli import main
from koalabot.events import ChatMessage, ThreadKey
from koalabot.store.database import open_database
from koalabot.store.spool import Spool
from tests.helpers_data import Seed

UMASKS = [pytest.param(0o022, id="umask-022"), pytest.param(0o000, id="umask-000")]


@pytest.fixture(params=UMASKS)
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


async def test_the_sqlite_database_and_its_wal_files_are_0600(umask: int, tmp_path: Path) -> None:
    path = tmp_path / "koalabot.db"
    db = await open_database(f"sqlite:///{path}")
    try:
        t = await Seed(db).thread(platform="slack", channel="C1")
        await t.ask("Something private", author="U1")
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert {f.name: mode(f) for f in files} == {f.name: "0o600" for f in files}
    finally:
        await db.close()


def test_the_spool_is_0600(umask: int, tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = Spool(path, limit=10)
    where = ThreadKey("slack", "T1", "C1", "1.0")
    try:
        spool.add(
            ChatMessage(where, "U1", "kept while the database was down", "1.1"), datetime.now(UTC)
        )
        assert mode(path) == "0o600"
    finally:
        spool.close()


def test_an_export_is_0600(umask: int, tmp_path: Path, sqlite_url: str) -> None:
    async def seed() -> None:
        db = await open_database(sqlite_url)
        t = await Seed(db).thread(platform="slack", channel="C1")
        await t.ask("What is a koala?", author="U1")
        await t.vote(await t.answer("A marsupial."), "U1", 1)
        await db.close()

    asyncio.run(seed())
    out = tmp_path / "rows.jsonl"
    argv = ["export", "--format", "sft", "--out", str(out), "--database-url", sqlite_url]
    argv.append("--no-pseudonymize")
    assert main(argv) == 0
    assert out.read_text() and mode(out) == "0o600"
