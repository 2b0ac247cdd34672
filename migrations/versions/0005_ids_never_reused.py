"""row ids never reused on SQLite

Revision ID: 0005_ids_never_reused
Revises: 0004
Create Date: 2026-12-03

Without AUTOINCREMENT, SQLite hands out the largest id in use plus one: the ids of the newest
rows come back once those rows are deleted (`koalabot forget`), and anything that still names
such an id (a button under an old answer, a cache in a running process) then points at another
person's row. Each table with an integer id is rebuilt as ``INTEGER PRIMARY KEY AUTOINCREMENT``,
rows and ids kept (SQLite's ``sqlite_sequence`` starts at the largest id copied; ids freed before
this migration ran cannot be known and are not fenced off). PostgreSQL's identity sequences never
go back: nothing to do there.

The rebuild is Alembic's batch "recreate" (copy into a new table, drop, rename), which koalabot
runs with foreign keys off so that dropping the old table cascades nowhere.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005_ids_never_reused"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Tables keyed by an integer id, parents first.
ID_TABLES = ("conversations", "messages", "message_refs", "generations", "feedback", "reviews")


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in ID_TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ) as batch:
            if not autoincrement:  # the named key 0004 had (AUTOINCREMENT keys have no name)
                batch.create_primary_key(f"pk_{table}", ["id"])


def upgrade() -> None:
    _rebuild(autoincrement=True)


def downgrade() -> None:
    _rebuild(autoincrement=False)
