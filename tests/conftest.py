"""Shared fixtures live in tests/fixtures/ (one module per external party)."""

import os
from pathlib import Path

import pytest

from koalabot.store.database import upgrade

# A SQLite write waits this long (seconds) for another process's write lock before it fails:
# tests that hold the lock on purpose wait this out, so keep it short (1 s outlasts the 0.5 s
# lock tests/store/test_sqlite_lane.py holds and then releases, with room for a loaded machine).
os.environ.setdefault("KOALABOT_SQLITE_BUSY_TIMEOUT", "1")

pytest_plugins = [
    "tests.fixtures.db",
    "tests.fixtures.tgi",
    "tests.fixtures.slack",
    "tests.fixtures.discord",
]


@pytest.fixture
async def migrated_database_url(database_url: str) -> str:
    """`database_url` with the schema at head (PostgreSQL is never upgraded implicitly)."""
    await upgrade(database_url)
    return database_url


@pytest.fixture(autouse=True)
def _spool_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Messages kept while a test's database is down go to the test's own directory, never the
    working directory's koalabot-spool.db."""
    path = tmp_path / "koalabot-spool.db"
    monkeypatch.setenv("KOALABOT_SPOOL_PATH", str(path))
    return path
