"""Tool-call requests (CONTRACT §12): every malformed shape is a 400, none a 500; good ones reach the provider."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient

from app import create_app
from app.config import Settings
from providers import DoneEvent, ToolCall, ToolCallDelta, ToolCallDeltaEvent, ToolCallEvent, ToolChoice
from tests.fakes import FakeProvider, registry_of

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
ROUND_TRIP = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18 °C"},
]


@pytest.fixture
def fake() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[TestClient[Litestar]]:
    with TestClient(create_app(Settings(), registry=registry_of(fake))) as c:
        yield c


def post(client: TestClient[Litestar], body: dict[str, Any]) -> Any:
    return client.post("/chat", content=json.dumps(body), headers={"content-type": "application/json"})


def tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


@pytest.mark.parametrize(
    "body",
    [
        {"message": "x", "tools": "get_weather"},
        {"message": "x", "tools": [{"type": "function"}]},
        {"message": "x", "tools": [{"type": "retrieval", "function": {"name": "f"}}]},
        {"message": "x", "tools": [{"function": {"name": 7}}]},
        {"message": "x", "tools": [tool("")]},
        {"message": "x", "tools": [tool("has space")]},
        {"message": "x", "tools": [tool("x" * 65)]},
        {"message": "x", "tools": [tool("dots.not.ok")]},
        {"message": "x", "tools": [tool("f"), tool("f")]},
        {"message": "x", "tools": [tool(f"f{i}") for i in range(129)]},
        {"message": "x", "tools": [{"type": "function", "function": {"name": "f", "parameters": "not an object"}}]},
        {"message": "x", "tool_choice": "sometimes"},
        {"message": "x", "tool_choice": "required"},
        {"message": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}},
        {"message": "x", "tools": [WEATHER], "tool_choice": {"type": "function"}},
        {"message": "x", "tools": [WEATHER], "tool_choice": {"function": {"name": 3}}},
        {"message": "x", "parallel_tool_calls": "yes"},
        {"messages": [{"role": "tool", "tool_call_id": "call_1", "content": "18 °C"}]},  # answers no call
        {"messages": [*ROUND_TRIP[:2], {"role": "tool", "tool_call_id": "call_9", "content": "?"}]},
        {"messages": [*ROUND_TRIP[:2], {"role": "tool", "content": "no id"}]},
        {"messages": [*ROUND_TRIP[:2], {"role": "tool", "tool_call_id": "call_1"}]},  # no content
        {"messages": [*ROUND_TRIP[:2], {"role": "tool", "tool_call_id": "call_1", "content": 18}]},
        {"messages": [{"role": "assistant", "content": None}]},  # neither content nor calls
        {"messages": [{"role": "user", "content": None}]},
        {"messages": [{"role": "user", "content": "x", "tool_call_id": "call_1"}]},
        {"messages": [{"role": "user", "content": "x", "tool_calls": [CALL]}]},
        {"messages": [{"role": "assistant", "tool_calls": [{**CALL, "id": ""}]}]},
        {"messages": [{"role": "assistant", "tool_calls": [{**CALL, "type": "code"}]}]},
        {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]}]},  # no arguments
        {
            "messages": [
                {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "a b", "arguments": ""}}]}
            ]
        },
        {"messages": [{"role": "assistant", "tool_calls": "call_1"}]},
    ],
)
def test_malformed_tool_shapes_are_invalid_request(
    client: TestClient[Litestar], fake: FakeProvider, body: dict[str, Any]
) -> None:
    response = post(client, body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_request"
    assert fake.calls == []


def test_a_tool_round_trip_reaches_the_provider_as_sent(client: TestClient[Litestar], fake: FakeProvider) -> None:
    body = {
        "messages": ROUND_TRIP,
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
    }
    assert post(client, body).status_code == 200
    (sent,) = fake.calls
    assert [m.role for m in sent.messages] == ["user", "assistant", "tool"]
    assert sent.messages[1].tool_calls is not None and sent.messages[1].tool_calls[0].id == "call_1"
    assert sent.messages[2].tool_call_id == "call_1"
    assert sent.tools is not None and sent.tools[0].function.name == "get_weather"
    assert isinstance(sent.tool_choice, ToolChoice) and sent.tool_choice.function.name == "get_weather"
    assert sent.parallel_tool_calls is False


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
def test_string_tool_choices(client: TestClient[Litestar], fake: FakeProvider, choice: str) -> None:
    assert post(client, {"message": "x", "tools": [WEATHER], "tool_choice": choice}).status_code == 200
    assert fake.calls[0].tool_choice == choice


def test_tool_events_are_ndjson_lines_and_websocket_frames() -> None:
    call = ToolCall(index=0, id="call_1", name="get_weather", arguments='{"city":"Paris"}')
    fake = FakeProvider(
        [
            [ToolCallDeltaEvent(ToolCallDelta(index=0, id="call_1", name="get_weather", arguments='{"city":'))],
            [ToolCallDeltaEvent(ToolCallDelta(index=0, arguments='"Paris"}'))],
            [ToolCallEvent(call), DoneEvent(done=True, finish_reason="tool_calls")],
        ]
    )
    expected = [
        {"tool_call_delta": {"index": 0, "id": "call_1", "name": "get_weather", "arguments": '{"city":'}},
        {"tool_call_delta": {"index": 0, "arguments": '"Paris"}'}},
        {"tool_call": {"index": 0, "id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"done": True, "finish_reason": "tool_calls"},
    ]
    with TestClient(create_app(Settings(), registry=registry_of(fake))) as client:
        lines = [json.loads(line) for line in post(client, {"message": "x", "tools": [WEATHER]}).text.splitlines()]
        with client.websocket_connect("/chat/ws") as ws:
            ws.send_text(json.dumps({"type": "chat", "id": 5, "message": "x", "tools": [WEATHER]}))
            frames = [json.loads(ws.receive_text()) for _ in range(5)]
    assert lines[1:] == expected
    assert frames[1:] == [{**event, "id": 5} for event in expected]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)
_tool_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["function", "x"]) | _json,
        "function": st.fixed_dictionaries(
            {}, optional={"name": st.text(max_size=6) | _json, "parameters": _json, "arguments": _json}
        )
        | _json,
        "id": st.text(max_size=6) | _json,
    },
)
_turn = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "tool", "system"])},
    optional={"content": st.text(max_size=6) | _json, "tool_calls": st.lists(_tool_like, max_size=2) | _json, "tool_call_id": st.text(max_size=6) | _json},
)  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tools=st.none() | st.lists(_tool_like, max_size=3) | _json,
    choice=st.none() | st.sampled_from(["auto", "none", "required"]) | _tool_like | _json,
    turns=st.lists(_turn, max_size=4),
)
def test_no_tool_shape_yields_a_500(client: TestClient[Litestar], tools: Any, choice: Any, turns: Any) -> None:
    body: dict[str, Any] = {"message": "x", "messages": turns}
    if tools is not None:
        body["tools"] = tools
    if choice is not None:
        body["tool_choice"] = choice
    assert post(client, body).status_code in (200, 400)
