"""which side of a battle an answer was

Revision ID: 0007_battle_sides
Revises: 0006_answer_models
Create Date: 2026-12-03

`messages.side` is "A" or "B" for the two answers of a side-by-side battle (NULL for every
other message), so the thread's memory, `/history` and the export know a battle from the store
alone, judged or not and whatever the battle settings are now. Battles made before it are known
only where someone judged them: their two answers are filled from `judgements`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_battle_sides"
down_revision: str | None = "0006_answer_models"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL = """
UPDATE messages SET side = CASE
    WHEN id IN (SELECT a_id FROM judgements) THEN 'A'
    WHEN id IN (SELECT b_id FROM judgements) THEN 'B'
END
WHERE id IN (SELECT a_id FROM judgements) OR id IN (SELECT b_id FROM judgements)
"""


def upgrade() -> None:
    # A nullable column without a default: no rebuild on SQLite, no rewrite on PostgreSQL.
    op.add_column("messages", sa.Column("side", sa.String(1), nullable=True))
    op.execute(BACKFILL)


def downgrade() -> None:
    # A rebuild on SQLite keeps the table's AUTOINCREMENT key (0005).
    with op.batch_alter_table("messages", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("side")
