"""The tables. Training data must be reproducible from them, so answers keep their exact prompt."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints so Alembic migrations are the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identities.
Id = BigInteger().with_variant(Integer(), "sqlite")
# ...and, unless told AUTOINCREMENT, gives a deleted row's id to the next row: a button or cache
# naming it would then reach another person's row. PostgreSQL's sequences never go back.
NEVER_REUSED: dict[str, Any] = {"sqlite_autoincrement": True}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Conversation(Base):
    """One thread on one platform: the unit of memory."""

    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint("platform", "workspace", "channel", "thread", name="uq_conversations_key"),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(32))
    workspace: Mapped[str] = mapped_column(String(64), default="")
    channel: Mapped[str] = mapped_column(String(64))
    thread: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: The channel the thread was opened from, where that is not ``channel`` (Discord).
    parent: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Message(Base):
    """A user message or an assistant answer; answers point at the user message they answer."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_conversation_id_id", "conversation_id", "id"),
        Index("ix_messages_parent_id", "parent_id"),
        Index("ix_messages_author", "author"),
        Index("ix_messages_model", "model"),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))  # "user" | "assistant"
    author: Mapped[str | None] = mapped_column(String(64), nullable=True)
    text: Mapped[str] = mapped_column(Text, default="")
    platform_message_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # ok | streaming | failed | interrupted
    status: Mapped[str] = mapped_column(String(16), default="ok")
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: The model that made an answer (a KOALABOT_MODELS name, else the server's model id).
    model: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: "A" or "B" for the two answers of a side-by-side battle, else None.
    side: Mapped[str | None] = mapped_column(String(1), nullable=True)


class MessageRef(Base):
    """Every platform message an answer was posted as (long answers span several)."""

    __tablename__ = "message_refs"
    __table_args__ = (
        UniqueConstraint("platform", "channel", "platform_message_id", name="uq_message_refs_key"),
        Index("ix_message_refs_message_id", "message_id"),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(64))
    platform_message_id: Mapped[str] = mapped_column(String(64))


class Generation(Base):
    """How an answer was produced: enough to reproduce it and to export its exact prompt."""

    __tablename__ = "generations"
    __table_args__ = (NEVER_REUSED,)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), unique=True
    )
    prompt: Mapped[str] = mapped_column(Text)
    template: Mapped[str] = mapped_column(String(64))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    endpoint: Mapped[str | None] = mapped_column(String(255), nullable=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    finish_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    time_to_first_token: Mapped[float | None] = mapped_column(Float, nullable=True)
    total_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    dropped_turns: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Feedback(Base):
    """One vote per (answer, user): the latest wins, removing a reaction deletes it."""

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("message_id", "user", name="uq_feedback_message_user"),
        # An answer's votes counted from the index alone (export, stats).
        Index("ix_feedback_message_id_rating", "message_id", "rating"),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    user: Mapped[str] = mapped_column(String(64))
    rating: Mapped[int] = mapped_column(SmallInteger)  # +1 | -1
    reason: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Judgement(Base):
    """One person's choice between the two answers of a side-by-side battle (latest counts):
    ``choice`` is a, b, tie or bad (both bad)."""

    __tablename__ = "judgements"
    __table_args__ = (
        UniqueConstraint("a_id", "b_id", "user", name="uq_judgements_pair_user"),
        Index("ix_judgements_b_id", "b_id"),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    a_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    b_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    user: Mapped[str] = mapped_column(String(64))
    choice: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProcessedEvent(Base):
    """Platform delivery ids already taken in: retries and duplicates are answered once."""

    __tablename__ = "processed_events"
    __table_args__ = (Index("ix_processed_events_message_id", "message_id"),)

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OptOut(Base):
    """Users ("platform:id") who asked that nothing of theirs be used for training."""

    __tablename__ = "optouts"

    user_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class StoredSetting(Base):
    """A value kept with the data rather than with one machine (the export's pseudonym secret)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Review(Base):
    """A person's decision on a rated answer, from `koalabot review`: the latest one counts.

    ``decision`` is include, exclude (with ``reason``) or correct (with ``correction``, the
    answer it should have given; the answer itself is never changed).
    """

    __tablename__ = "reviews"
    __table_args__ = (NEVER_REUSED,)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), unique=True
    )
    decision: Mapped[str] = mapped_column(String(16))  # include | exclude | correct
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)
    reviewer: Mapped[str] = mapped_column(String(128))
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# What a reviewer can decide about an answer on the review page, as plain values.
class Decision(StrEnum):
    """What a reviewer can decide about an answer."""

    INCLUDE = "include"
    EXCLUDE = "exclude"
    CORRECT = "correct"


#: Why an answer is excluded (stored value → what the page shows).
REASONS: dict[str, str] = {
    "wrong": "wrong",
    "unsafe": "unsafe",
    "private": "private",
    "low_quality": "low quality",
    "off_topic": "off-topic",
}

#: Exclusion reasons whose text must not reach training data even as an earlier turn.
WITHHELD_REASONS = frozenset({"unsafe", "private"})
