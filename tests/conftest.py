"""Shared fixtures live in tests/fixtures/ (one module per external party)."""

pytest_plugins = ["tests.fixtures.db", "tests.fixtures.tgi"]
