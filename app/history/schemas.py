"""What the ``/conversations`` routes take and give (msgspec; keys that do not apply are left out)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

__all__ = (
    "ConversationDetail",
    "ConversationPage",
    "ConversationSummary",
    "MessageError",
    "StoredMessage",
    "TitleUpdate",
    "rfc3339",
)

_TIME = msgspec.Meta(description="RFC 3339, UTC, milliseconds: 2026-01-02T03:04:05.123Z")
Time = Annotated[str, _TIME]


def rfc3339(moment: datetime) -> str:
    """``2026-01-02T03:04:05.123Z``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class ConversationSummary(msgspec.Struct, kw_only=True):
    """A conversation as the list shows it."""

    id: Annotated[str, msgspec.Meta(description="The conversation's UUID.")]
    title: str
    created_at: Time
    updated_at: Time
    message_count: int


class ConversationPage(msgspec.Struct, kw_only=True):
    """One page of the principal's conversations, newest ``updated_at`` first."""

    data: list[ConversationSummary]
    next_cursor: Annotated[str | None, msgspec.Meta(description="Pass as `cursor` for the next page; null at the end.")]


class MessageError(msgspec.Struct, kw_only=True):
    """Why an assistant message ended in an error."""

    code: str
    message: str


class StoredMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One stored turn; the assistant's carry their status and what produced them."""

    id: str
    role: str
    content: str
    created_at: Time
    status: (
        Annotated[str, msgspec.Meta(description="streaming, complete, interrupted or error (assistant turns).")]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    reasoning: str | msgspec.UnsetType = msgspec.UNSET
    finish_reason: str | msgspec.UnsetType = msgspec.UNSET
    error: MessageError | msgspec.UnsetType = msgspec.UNSET
    usage: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    model: str | msgspec.UnsetType = msgspec.UNSET
    provider: str | msgspec.UnsetType = msgspec.UNSET
    tool_calls: list[dict[str, Any]] | msgspec.UnsetType = msgspec.UNSET
    tool_call_id: str | msgspec.UnsetType = msgspec.UNSET


class ConversationDetail(msgspec.Struct, kw_only=True):
    """A conversation with its messages, oldest first."""

    id: str
    title: str
    created_at: Time
    updated_at: Time
    messages: list[StoredMessage]


class TitleUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """``PATCH /conversations/{id}``: a new title, 1 to 200 characters after trimming."""

    title: Annotated[str, msgspec.Meta(description="1 to 200 characters after trimming.")]
