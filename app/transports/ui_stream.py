"""Our chat events as the AI SDK's UI message stream (CONTRACT §13): one ``data: <part>`` SSE event per part.

One :class:`UIStreamEncoder` per answer keeps which text, reasoning and tool parts are open, so
that ``text-start`` comes before any ``text-delta`` and every ``*-end`` before ``finish``. Only
part types and fields the SDK documents are sent: ``ai`` 5.x checks each part against a strict
schema and rejects a stream with an unknown key.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from providers.events import (
    ChatEvent,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    MetaEvent,
    ReasoningEvent,
    ToolCall,
    ToolCallDeltaEvent,
    ToolCallEvent,
)

__all__ = ("DONE_LINE", "UI_STREAM_HEADERS", "UIStreamEncoder", "finish_reason_of")

#: The SDK's transport reads the stream only with this header (and SSE's content type).
UI_STREAM_HEADERS: Final = {
    "x-vercel-ai-ui-message-stream": "v1",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
DONE_LINE: Final = b"data: [DONE]\n\n"
_FINISH_REASONS: Final = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
    "content_filter": "content-filter",
}


def invalid_arguments(name: str) -> str:
    """The ``errorText`` of a call whose arguments are not JSON (live, and when the chat is reloaded)."""
    return f"the model's arguments for {name!r} are not valid JSON"


# The parts, each a Struct so that one encode writes it; the tag is the part's ``type``.
class _Part(msgspec.Struct, tag_field="type", rename="camel", gc=False):
    """A part; ``UNSET`` fields are left out (defaults such as ``dynamic: true`` are sent)."""


class _Start(_Part, tag="start"):
    message_metadata: dict[str, Any]
    message_id: str | msgspec.UnsetType = msgspec.UNSET


class _StartStep(_Part, tag="start-step"):
    pass


class _FinishStep(_Part, tag="finish-step"):
    pass


class _Finish(_Part, tag="finish"):
    finish_reason: str
    message_metadata: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


class _TextStart(_Part, tag="text-start"):
    id: str


class _TextDelta(_Part, tag="text-delta"):
    id: str
    delta: str


class _TextEnd(_Part, tag="text-end"):
    id: str


class _ReasoningStart(_Part, tag="reasoning-start"):
    id: str


class _ReasoningDelta(_Part, tag="reasoning-delta"):
    id: str
    delta: str


class _ReasoningEnd(_Part, tag="reasoning-end"):
    id: str


class _ToolInputStart(_Part, tag="tool-input-start"):
    tool_call_id: str
    tool_name: str
    dynamic: bool = True


class _ToolInputDelta(_Part, tag="tool-input-delta"):
    tool_call_id: str
    input_text_delta: str


class _ToolInputAvailable(_Part, tag="tool-input-available"):
    tool_call_id: str
    tool_name: str
    input: Any
    dynamic: bool = True


class _ToolInputError(_Part, tag="tool-input-error"):
    tool_call_id: str
    tool_name: str
    input: Any
    error_text: str
    dynamic: bool = True


class _ErrorData(msgspec.Struct, gc=False):
    code: str
    retryable: bool


class _DataError(_Part, tag="data-error"):
    data: _ErrorData
    transient: bool = True


class _Error(_Part, tag="error"):
    error_text: str


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder()
_PREFIX: Final = b"data: "
_SUFFIX: Final = b"\n\n"


_DELTA_TAIL: Final = b"}" + _SUFFIX


def _delta_head(empty: _Part) -> bytes:
    """``data: {…,"delta":`` of a delta part (its ``delta`` field last), to which each delta's JSON string is added."""
    encoded = _PREFIX + _encoder.encode(empty)
    assert encoded.endswith(b'"delta":""}')
    return encoded[: -len(b'""}')]


def finish_reason_of(reason: str | None) -> str:
    """Our (the upstream's) finish reason as one the SDK knows; anything else, ``cancelled`` too, is ``other``."""
    return _FINISH_REASONS.get(reason or "", "other")


class UIStreamEncoder:
    """Encodes one answer's batches; each batch becomes one buffer (one write to the client)."""

    __slots__ = (
        "_buffer",
        "_reasoning",
        "_reasoning_count",
        "_reasoning_head",
        "_text",
        "_text_count",
        "_text_head",
        "_tools",
    )

    def __init__(self) -> None:
        self._text: str | None = None
        """The open text part's id."""
        self._reasoning: str | None = None
        self._text_count = 0
        self._reasoning_count = 0
        # A delta is the open part's bytes up to its "delta" value, the value, and the close: one
        # encode of the string per token, no part object.
        self._text_head = b""
        self._reasoning_head = b""
        self._tools: dict[int, tuple[str, str]] = {}
        """Open tool calls by our index: their id and name."""
        self._buffer = bytearray()

    def encode(self, batch: Sequence[ChatEvent]) -> bytes:
        """The parts for ``batch``; after a terminal event, the stream's ``[DONE]`` too."""
        buffer = self._buffer
        buffer.clear()
        for event in batch:
            kind = type(event)
            if kind is DeltaEvent:
                self._text_delta(event.delta)  # type: ignore[union-attr]
            elif kind is ReasoningEvent:
                self._reasoning_delta(event.reasoning)  # type: ignore[union-attr]
            elif kind is ToolCallDeltaEvent:
                self._tool_delta(event)  # type: ignore[arg-type]
            elif kind is ToolCallEvent:
                self._tool_call(event.tool_call)  # type: ignore[union-attr]
            elif kind is MetaEvent:
                self._start(event)  # type: ignore[arg-type]
            elif kind is DoneEvent:
                self._done(event)  # type: ignore[arg-type]
            elif kind is ErrorEvent:
                self._error(event)  # type: ignore[arg-type]
        return bytes(buffer)

    def _put(self, part: _Part) -> None:
        buffer = self._buffer
        buffer += _PREFIX
        _encoder.encode_into(part, buffer, -1)
        buffer += _SUFFIX

    def _start(self, event: MetaEvent) -> None:
        meta = event.meta
        metadata: dict[str, Any] = {"model": meta.model, "provider": meta.provider}
        if not isinstance(meta.conversation_id, msgspec.UnsetType):
            metadata["conversation_id"] = meta.conversation_id
        # An answer that is not stored has no id of its own; the SDK's messages still want one.
        message_id = meta.message_id if isinstance(meta.message_id, str) else str(uuid.uuid4())
        self._put(_Start(message_metadata=metadata, message_id=message_id))
        self._put(_StartStep())

    def _text_delta(self, delta: str) -> None:
        if self._reasoning is not None:
            self._put(_ReasoningEnd(self._reasoning))
            self._reasoning = None
        if self._text is None:
            self._text_count += 1
            self._text = part = f"text-{self._text_count}"
            self._put(_TextStart(part))
            self._text_head = _delta_head(_TextDelta(part, ""))
        buffer = self._buffer
        buffer += self._text_head
        _encoder.encode_into(delta, buffer, -1)
        buffer += _DELTA_TAIL

    def _reasoning_delta(self, delta: str) -> None:
        if self._reasoning is None:
            self._reasoning_count += 1
            self._reasoning = part = f"reasoning-{self._reasoning_count}"
            self._put(_ReasoningStart(part))
            self._reasoning_head = _delta_head(_ReasoningDelta(part, ""))
        buffer = self._buffer
        buffer += self._reasoning_head
        _encoder.encode_into(delta, buffer, -1)
        buffer += _DELTA_TAIL

    def _tool_delta(self, event: ToolCallDeltaEvent) -> None:
        fragment = event.tool_call_delta
        known = self._tools.get(fragment.index)
        if known is None:
            # id and name come on a call's first fragment (the parser makes an id if the upstream gave none)
            call_id = fragment.id if isinstance(fragment.id, str) else f"call_{fragment.index}"
            name = fragment.name if isinstance(fragment.name, str) else ""
            known = self._tools[fragment.index] = (call_id, name)
            self._put(_ToolInputStart(call_id, name))
        if fragment.arguments:
            self._put(_ToolInputDelta(known[0], fragment.arguments))

    def _tool_call(self, call: ToolCall) -> None:
        if call.index not in self._tools:
            self._put(_ToolInputStart(call.id, call.name))
        self._tools[call.index] = (call.id, call.name)
        try:
            arguments = _decoder.decode(call.arguments) if call.arguments.strip() else {}
        except msgspec.DecodeError:
            self._put(
                _ToolInputError(
                    call.id,
                    call.name,
                    call.arguments,
                    invalid_arguments(call.name),
                )
            )
            return
        self._put(_ToolInputAvailable(call.id, call.name, arguments))

    def _close_parts(self) -> None:
        if self._reasoning is not None:
            self._put(_ReasoningEnd(self._reasoning))
            self._reasoning = None
        if self._text is not None:
            self._put(_TextEnd(self._text))
            self._text = None

    def _done(self, event: DoneEvent) -> None:
        self._close_parts()
        self._put(_FinishStep())
        usage = event.usage
        metadata: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
        if not isinstance(usage, msgspec.UnsetType):
            metadata = {"usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}}
        self._put(_Finish(finish_reason_of(event.finish_reason), metadata))
        self._buffer += DONE_LINE

    def _error(self, event: ErrorEvent) -> None:
        error = event.error
        self._close_parts()
        self._put(_DataError(_ErrorData(error.code, error.retryable)))
        self._put(_Error(error.message))
        self._put(_FinishStep())
        self._put(_Finish("error"))
        self._buffer += DONE_LINE
