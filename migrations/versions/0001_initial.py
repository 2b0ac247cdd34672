"""initial schema

Revision ID: 0001
Revises:
Create Date: 2024-06-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model types: SQLite only auto-increments INTEGER PRIMARY KEY.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("workspace", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("thread", sa.String(64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
        sa.UniqueConstraint(
            "platform", "workspace", "channel", "thread", name="uq_conversations_key"
        ),
    )
    op.create_table(
        "optouts",
        sa.Column("user_key", sa.String(128), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("user_key", name="pk_optouts"),
    )
    op.create_table(
        "messages",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("conversation_id", Id, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("author", sa.String(64), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("platform_message_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("parent_id", Id, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_messages_conversation_id_conversations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["messages.id"],
            name="fk_messages_parent_id_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
    )
    op.create_index("ix_messages_author", "messages", ["author"])
    op.create_index("ix_messages_conversation_id_id", "messages", ["conversation_id", "id"])
    op.create_index("ix_messages_parent_id", "messages", ["parent_id"])
    op.create_table(
        "feedback",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("message_id", Id, nullable=False),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("rating", sa.SmallInteger(), nullable=False),
        sa.Column("reason", sa.String(255), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_feedback_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.UniqueConstraint("message_id", "user", name="uq_feedback_message_user"),
    )
    op.create_table(
        "generations",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("message_id", Id, nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("model_id", sa.String(255), nullable=True),
        sa.Column("endpoint", sa.String(255), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("finish_reason", sa.String(32), nullable=True),
        sa.Column("time_to_first_token", sa.Float(), nullable=True),
        sa.Column("total_time", sa.Float(), nullable=True),
        sa.Column("dropped_turns", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_generations_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_generations"),
        sa.UniqueConstraint("message_id", name="uq_generations_message_id"),
    )
    op.create_table(
        "message_refs",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("message_id", Id, nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("platform_message_id", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_message_refs_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_message_refs"),
        sa.UniqueConstraint(
            "platform", "channel", "platform_message_id", name="uq_message_refs_key"
        ),
    )
    op.create_index("ix_message_refs_message_id", "message_refs", ["message_id"])
    op.create_table(
        "processed_events",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("message_id", Id, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_processed_events_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key", name="pk_processed_events"),
    )
    op.create_index("ix_processed_events_message_id", "processed_events", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_processed_events_message_id", table_name="processed_events")
    op.drop_table("processed_events")
    op.drop_index("ix_message_refs_message_id", table_name="message_refs")
    op.drop_table("message_refs")
    op.drop_table("generations")
    op.drop_table("feedback")
    op.drop_index("ix_messages_parent_id", table_name="messages")
    op.drop_index("ix_messages_conversation_id_id", table_name="messages")
    op.drop_index("ix_messages_author", table_name="messages")
    op.drop_table("messages")
    op.drop_table("optouts")
    op.drop_table("conversations")
