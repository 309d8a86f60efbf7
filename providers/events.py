"""The events of one chat answer: one model for every transport (NDJSON, WebSocket, the AI SDK stream).

Each event encodes to exactly one line of the contract's wire format, keyed by field name:
``{"meta":…}``, ``{"delta":…}``, ``{"reasoning":…}``, ``{"tool_call_delta":…}``,
``{"tool_call":…}``, ``{"done":true,…}``, ``{"error":…}``.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import msgspec

from providers.errors import AgentError

__all__ = (
    "ChatEvent",
    "DeltaEvent",
    "DoneEvent",
    "ErrorEvent",
    "ErrorInfo",
    "Meta",
    "MetaEvent",
    "ReasoningEvent",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallDeltaEvent",
    "ToolCallEvent",
    "Usage",
    "error_event",
)


class Meta(msgspec.Struct, kw_only=True):
    """What the answer is about; keys left ``UNSET`` are left out of the line."""

    model: str
    role: Literal["assistant"] = "assistant"
    provider: str
    conversation_id: str | msgspec.UnsetType = msgspec.UNSET
    """The stored conversation the answer belongs to (when it is stored)."""
    message_id: str | msgspec.UnsetType = msgspec.UNSET
    """The stored assistant message (when it is stored)."""


class MetaEvent(msgspec.Struct, gc=False):
    """Always the first line of a stream."""

    meta: Meta


class DeltaEvent(msgspec.Struct, gc=False):
    """A piece of answer text; never empty."""

    delta: str


class ReasoningEvent(msgspec.Struct, gc=False):
    """A piece of reasoning text, where the upstream streams it; never empty."""

    reasoning: str


class ToolCallDelta(msgspec.Struct, kw_only=True, gc=False):
    """A fragment of a tool call; ``id`` and ``name`` (left out while ``UNSET``) on a call's first fragment only."""

    index: int
    id: str | msgspec.UnsetType = msgspec.UNSET
    name: str | msgspec.UnsetType = msgspec.UNSET
    arguments: str = ""
    """The raw fragment of the arguments' JSON text, possibly empty."""


class ToolCallDeltaEvent(msgspec.Struct, gc=False):
    """A fragment of a tool call, as it arrives."""

    tool_call_delta: ToolCallDelta


class ToolCall(msgspec.Struct, gc=False):
    """A complete tool call: ``arguments`` is the JSON text as the model wrote it."""

    index: int
    id: str
    name: str
    arguments: str


class ToolCallEvent(msgspec.Struct, gc=False):
    """One complete call, once the upstream's answer has ended, before ``done``."""

    tool_call: ToolCall


class Usage(msgspec.Struct, omit_defaults=True):
    """Token counts, as the upstream reported them."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class DoneEvent(msgspec.Struct):
    """The answer finished. ``usage`` is left out where the upstream did not report it."""

    done: Literal[True]
    finish_reason: str | None
    usage: Usage | msgspec.UnsetType = msgspec.UNSET


class ErrorInfo(msgspec.Struct):
    """The body of an in-stream error line."""

    code: str
    message: str
    retryable: bool


class ErrorEvent(msgspec.Struct):
    """The stream failed after it had started; always the last line."""

    error: ErrorInfo


ChatEvent: TypeAlias = (
    MetaEvent | DeltaEvent | ReasoningEvent | ToolCallDeltaEvent | ToolCallEvent | DoneEvent | ErrorEvent
)


def error_event(exc: AgentError) -> ErrorEvent:
    """The in-stream form of an error."""
    return ErrorEvent(ErrorInfo(code=exc.code, message=exc.message, retryable=exc.retryable))
