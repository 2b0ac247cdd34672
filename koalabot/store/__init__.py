"""The conversation store: SQL tables, migrations and the async database handle."""

from koalabot.store.database import (
    Database,
    async_url,
    current_revision,
    downgrade,
    head_revision,
    open_database,
    upgrade,
)

__all__ = [
    "Database",
    "async_url",
    "current_revision",
    "downgrade",
    "head_revision",
    "open_database",
    "upgrade",
]
