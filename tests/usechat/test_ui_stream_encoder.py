"""The UI message stream encoder: the exact parts for each kind of answer (CONTRACT §13's table)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from app.transports.ui_stream import UIStreamEncoder, finish_reason_of
from providers.events import (
    ChatEvent,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    ErrorInfo,
    Meta,
    MetaEvent,
    ReasoningEvent,
    ToolCall,
    ToolCallDelta,
    ToolCallDeltaEvent,
    ToolCallEvent,
    Usage,
)

STORED = MetaEvent(Meta(model="m1", provider="local", conversation_id="c-uuid", message_id="a-uuid"))


def parts(*batches: list[ChatEvent]) -> list[Any]:
    """Every ``data:`` event of the batches, decoded (``[DONE]`` as the string)."""
    encoder = UIStreamEncoder()
    body = b"".join(encoder.encode(batch) for batch in batches).decode()
    assert body.endswith("\n\n")
    events = body[:-2].split("\n\n")
    out: list[Any] = []
    for event in events:
        assert event.startswith("data: "), event
        payload = event[len("data: ") :]
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def test_text_answer() -> None:
    got = parts(
        [STORED],
        [DeltaEvent("Hi")],
        [DeltaEvent(" there"), DoneEvent(True, "stop", Usage(prompt_tokens=3, completion_tokens=2))],
    )
    assert got == [
        {
            "type": "start",
            "messageId": "a-uuid",
            "messageMetadata": {"model": "m1", "provider": "local", "conversation_id": "c-uuid"},
        },
        {"type": "start-step"},
        {"type": "text-start", "id": "text-1"},
        {"type": "text-delta", "id": "text-1", "delta": "Hi"},
        {"type": "text-delta", "id": "text-1", "delta": " there"},
        {"type": "text-end", "id": "text-1"},
        {"type": "finish-step"},
        {
            "type": "finish",
            "finishReason": "stop",
            "messageMetadata": {"usage": {"prompt_tokens": 3, "completion_tokens": 2}},
        },
        "[DONE]",
    ]


def test_unstored_answer_gets_a_fresh_message_id_and_no_conversation() -> None:
    got = parts([MetaEvent(Meta(model="m1", provider="local"))], [DoneEvent(True, "stop")])
    message_id = got[0].pop("messageId")
    assert uuid.UUID(message_id)  # §13: start carries a messageId; an unstored answer makes one up
    assert got[0] == {"type": "start", "messageMetadata": {"model": "m1", "provider": "local"}}
    again = parts([MetaEvent(Meta(model="m1", provider="local"))], [DoneEvent(True, "stop")])
    assert again[0]["messageId"] != message_id
    assert got[-2] == {"type": "finish", "finishReason": "stop"}  # no usage reported: no metadata


def test_reasoning_ends_before_text_starts() -> None:
    got = parts(
        [STORED],
        [ReasoningEvent("think"), ReasoningEvent("ing")],
        [DeltaEvent("answer"), DoneEvent(True, "stop")],
    )
    assert [p["type"] if isinstance(p, dict) else p for p in got] == [
        "start",
        "start-step",
        "reasoning-start",
        "reasoning-delta",
        "reasoning-delta",
        "reasoning-end",
        "text-start",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
        "[DONE]",
    ]
    assert got[3] == {"type": "reasoning-delta", "id": "reasoning-1", "delta": "think"}
    assert got[5] == {"type": "reasoning-end", "id": "reasoning-1"}


def test_reasoning_only_is_ended_at_the_end() -> None:
    got = parts([STORED], [ReasoningEvent("hm"), DoneEvent(True, "length")])
    assert got[2:] == [
        {"type": "reasoning-start", "id": "reasoning-1"},
        {"type": "reasoning-delta", "id": "reasoning-1", "delta": "hm"},
        {"type": "reasoning-end", "id": "reasoning-1"},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "length"},
        "[DONE]",
    ]


def test_tool_call() -> None:
    got = parts(
        [STORED],
        [ToolCallDeltaEvent(ToolCallDelta(index=0, id="call_1", name="get_weather", arguments='{"ci'))],
        [ToolCallDeltaEvent(ToolCallDelta(index=0, arguments='ty":"Paris"}'))],
        [ToolCallEvent(ToolCall(0, "call_1", "get_weather", '{"city":"Paris"}')), DoneEvent(True, "tool_calls")],
    )
    assert got[2:] == [
        {"type": "tool-input-start", "toolCallId": "call_1", "toolName": "get_weather", "dynamic": True},
        {"type": "tool-input-delta", "toolCallId": "call_1", "inputTextDelta": '{"ci'},
        {"type": "tool-input-delta", "toolCallId": "call_1", "inputTextDelta": 'ty":"Paris"}'},
        {
            "type": "tool-input-available",
            "toolCallId": "call_1",
            "toolName": "get_weather",
            "input": {"city": "Paris"},
            "dynamic": True,
        },
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "tool-calls"},
        "[DONE]",
    ]


def test_tool_call_with_arguments_that_are_not_json() -> None:
    got = parts(
        [STORED],
        [ToolCallDeltaEvent(ToolCallDelta(index=0, id="call_1", name="f", arguments="{oops"))],
        [ToolCallEvent(ToolCall(0, "call_1", "f", "{oops")), DoneEvent(True, "tool_calls")],
    )
    error = got[4]
    assert error["type"] == "tool-input-error"
    assert error["toolCallId"] == "call_1" and error["toolName"] == "f" and error["input"] == "{oops"
    assert error["dynamic"] is True and "not valid JSON" in error["errorText"]
    assert set(error) == {"type", "toolCallId", "toolName", "input", "errorText", "dynamic"}


def test_tool_call_without_a_delta_still_starts_its_input() -> None:
    got = parts([STORED], [ToolCallEvent(ToolCall(0, "c9", "f", "")), DoneEvent(True, "tool_calls")])
    assert got[2] == {"type": "tool-input-start", "toolCallId": "c9", "toolName": "f", "dynamic": True}
    assert got[3]["type"] == "tool-input-available" and got[3]["input"] == {}


def test_finish_reasons() -> None:
    assert finish_reason_of("stop") == "stop"
    assert finish_reason_of("length") == "length"
    assert finish_reason_of("tool_calls") == "tool-calls"
    assert finish_reason_of("content_filter") == "content-filter"
    assert finish_reason_of("cancelled") == "other"
    assert finish_reason_of(None) == "other"
    for reason, expected in [("content_filter", "content-filter"), ("cancelled", "other")]:
        assert parts([STORED], [DoneEvent(True, reason)])[-2] == {"type": "finish", "finishReason": expected}


def test_error_mid_stream() -> None:
    info = ErrorInfo(code="stream_interrupted", message="the upstream went away; try again", retryable=True)
    error = ErrorEvent(info)
    got = parts([STORED], [ReasoningEvent("r")], [DeltaEvent("par")], [error])
    assert got[2:] == [
        {"type": "reasoning-start", "id": "reasoning-1"},
        {"type": "reasoning-delta", "id": "reasoning-1", "delta": "r"},
        {"type": "reasoning-end", "id": "reasoning-1"},
        {"type": "text-start", "id": "text-1"},
        {"type": "text-delta", "id": "text-1", "delta": "par"},
        {"type": "text-end", "id": "text-1"},
        {"type": "data-error", "data": {"code": "stream_interrupted", "retryable": True}, "transient": True},
        {"type": "error", "errorText": "the upstream went away; try again"},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "error"},
        "[DONE]",
    ]


def test_text_after_reasoning_after_text_gets_new_parts() -> None:
    got = parts([STORED], [DeltaEvent("a"), ReasoningEvent("b"), DeltaEvent("c"), DoneEvent(True, "stop")])
    kinds = [(p["type"], p.get("id")) for p in got[2:-1]]
    assert kinds == [
        ("text-start", "text-1"),
        ("text-delta", "text-1"),
        ("reasoning-start", "reasoning-1"),
        ("reasoning-delta", "reasoning-1"),
        ("reasoning-end", "reasoning-1"),
        ("text-delta", "text-1"),
        ("text-end", "text-1"),
        ("finish-step", None),
        ("finish", None),
    ]


def test_each_batch_is_one_buffer_of_whole_events() -> None:
    encoder = UIStreamEncoder()
    encoder.encode([STORED])
    chunk = encoder.encode([DeltaEvent("x"), DeltaEvent("y")])
    assert chunk.count(b"data: ") == 3 and chunk.endswith(b"\n\n")
