"""Shared fixtures live in tests/fixtures/ (one module per external party)."""

import pytest

from koalabot.store.database import upgrade

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
