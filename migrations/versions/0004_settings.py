"""settings kept with the database

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

A small key/value table for values that belong to the data rather than to one machine: the
export's pseudonym secret is made once and kept here, so every export of this database (from any
machine, on SQLite or PostgreSQL) gives a user the same pseudonym.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "settings",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_settings"),
    )


def downgrade() -> None:
    op.drop_table("settings")
