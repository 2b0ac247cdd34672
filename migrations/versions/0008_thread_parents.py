"""the channel a thread was opened from

Revision ID: 0008_thread_parents
Revises: 0007_battle_sides
Create Date: 2026-12-03

`conversations.parent` is the channel a thread was opened from where that is not its own
channel (a Discord thread is a channel of its own; NULL elsewhere), so channel settings
(KOALABOT_ALLOWED_CHANNELS, KOALABOT_BATTLE_CHANNELS) reach the thread for clicks, reactions
and answers after a restart too. Threads stored before it have none: the adapter still gives
it with every new message.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_thread_parents"
down_revision: str | None = "0007_battle_sides"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column without a default: no rebuild on SQLite, no rewrite on PostgreSQL.
    op.add_column("conversations", sa.Column("parent", sa.String(64), nullable=True))


def downgrade() -> None:
    # A rebuild on SQLite keeps the table's AUTOINCREMENT key (0005).
    with op.batch_alter_table(
        "conversations", table_kwargs={"sqlite_autoincrement": True}
    ) as batch:
        batch.drop_column("parent")
