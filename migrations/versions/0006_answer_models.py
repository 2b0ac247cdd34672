"""which model answered, and battle judgements

Revision ID: 0006_answer_models
Revises: 0005_ids_never_reused
Create Date: 2026-12-03

`messages.model` names the model that made an answer (the KOALABOT_MODELS name, or the server's
model id with one backend), indexed so `koalabot stats --models` and `export --model` read it
without joining the generation record; answers made before it are filled from that record.
`judgements` holds one person's latest choice between the two answers of a side-by-side battle.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_answer_models"
down_revision: str | None = "0005_ids_never_reused"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model types: SQLite only auto-increments INTEGER PRIMARY KEY.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)

BACKFILL = """
UPDATE messages SET model = (
    SELECT generations.model_id FROM generations WHERE generations.message_id = messages.id
) WHERE role = 'assistant'
"""


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("model", sa.String(255), nullable=True))
        batch.create_index("ix_messages_model", ["model"])
    op.execute(BACKFILL)
    op.create_table(
        "judgements",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("a_id", Id, nullable=False),
        sa.Column("b_id", Id, nullable=False),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("choice", sa.String(8), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["a_id"], ["messages.id"], name="fk_judgements_a_id_messages", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["b_id"], ["messages.id"], name="fk_judgements_b_id_messages", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_judgements"),
        sa.UniqueConstraint("a_id", "b_id", "user", name="uq_judgements_pair_user"),
        sqlite_autoincrement=True,  # ids never reused (0005)
    )
    op.create_index("ix_judgements_b_id", "judgements", ["b_id"])


def downgrade() -> None:
    op.drop_index("ix_judgements_b_id", table_name="judgements")
    op.drop_table("judgements")
    # A rebuild on SQLite keeps the table's AUTOINCREMENT key (0005).
    with op.batch_alter_table("messages", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_index("ix_messages_model")
        batch.drop_column("model")
