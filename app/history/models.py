"""The stored conversations and their messages (SQLAlchemy models; the schema itself comes from the migrations)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from advanced_alchemy.base import DefaultBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

__all__ = ("Conversation", "Message")

#: JSON (JSONB on PostgreSQL) where ``None`` is SQL NULL rather than the JSON value ``null``.
Json = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class Conversation(DefaultBase):
    """One conversation of one principal.

    ``streaming_message_id`` and ``heartbeat_at`` are the claim of the answer being streamed: a
    chat may start only while it is empty or its heartbeat (the database's clock) has gone stale,
    which one conditional ``UPDATE`` decides for every process at once.
    """

    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_owner_updated", "owner", "updated_at", "id"),
        Index("ix_conversations_owner_external", "owner", "external_id", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)

    owner: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC)
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC)
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    """Messages stored; also the position the next one takes (messages are only ever removed from the end)."""
    streaming_message_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTimeUTC, default=None)
    external_id: Mapped[str | None] = mapped_column(String(128), default=None)
    """The client's own name for the conversation (the AI SDK's chat id), unique per owner."""


class Message(DefaultBase):
    """One turn; assistant turns carry their status, and while ``streaming`` a heartbeat."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_conversation_position", "conversation_id", "position", unique=True),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)

    conversation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC)
    status: Mapped[str | None] = mapped_column(String(16), default=None)
    """Assistant turns: ``streaming``, ``complete``, ``interrupted`` or ``error``."""
    reasoning: Mapped[str | None] = mapped_column(Text, default=None)
    finish_reason: Mapped[str | None] = mapped_column(String(64), default=None)
    usage: Mapped[dict[str, Any] | None] = mapped_column(Json, default=None)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    model: Mapped[str | None] = mapped_column(String(300), default=None)
    provider: Mapped[str | None] = mapped_column(String(100), default=None)
    tool_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(Json, default=None)
    tool_call_id: Mapped[str | None] = mapped_column(String(200), default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTimeUTC, default=None)
