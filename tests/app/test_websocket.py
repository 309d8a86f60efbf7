"""``WS /chat/ws`` frame protocol through Litestar's WebSocket test client (CONTRACT §8)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient
from litestar.testing.websocket_test_session import WebSocketTestSession

from app import create_app
from app.config import Limits, Settings
from app.sections import WebSocketSettings
from providers import DeltaEvent, DoneEvent, ModelNotFound, UpstreamRejected, UpstreamUnavailable
from tests.fakes import FakeProvider, registry_of


def frames_until_terminal(ws: WebSocketTestSession) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while True:
        frame = json.loads(ws.receive_text())
        frames.append(frame)
        if "done" in frame or "error" in frame:
            return frames


@pytest.fixture
def fake() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[TestClient[Litestar]]:
    with TestClient(create_app(Settings(limits=Limits(max_body_bytes=4096)), registry=registry_of(fake))) as c:
        yield c


def test_chat_frames_are_the_ndjson_lines_plus_id(client: TestClient[Litestar]) -> None:
    with client.websocket_connect("/chat/ws", subprotocols=["agent-backend.v1"]) as ws:
        # Not stored: each stored chat's meta names a conversation of its own.
        ws.send_text(json.dumps({"type": "chat", "id": "q1", "message": "hello", "store": False}))
        frames = frames_until_terminal(ws)
        ndjson = client.post("/chat", json={"message": "hello", "store": False}).text.splitlines()
    assert frames == [{**json.loads(line), "id": "q1"} for line in ndjson]
    assert frames[0]["meta"] == {"model": "local-model", "role": "assistant", "provider": "local"}


def test_subprotocol_is_selected_when_offered(client: TestClient[Litestar]) -> None:
    with client.websocket_connect("/chat/ws", subprotocols=["bearer.x", "agent-backend.v1"]) as ws:
        assert ws.accepted_subprotocol == "agent-backend.v1"  # type: ignore[attr-defined]
    with client.websocket_connect("/chat/ws") as ws:
        assert ws.accepted_subprotocol is None  # type: ignore[attr-defined]


def test_chat_without_id_has_no_id_and_integer_ids_are_echoed(client: TestClient[Litestar]) -> None:
    with client.websocket_connect("/chat/ws") as ws:
        ws.send_text(json.dumps({"type": "chat", "message": "a"}))
        assert all("id" not in frame for frame in frames_until_terminal(ws))
        ws.send_text(json.dumps({"type": "chat", "id": 42, "message": "b"}))
        assert {frame["id"] for frame in frames_until_terminal(ws)} == {42}


def test_several_chats_in_sequence_on_one_socket(client: TestClient[Litestar], fake: FakeProvider) -> None:
    with client.websocket_connect("/chat/ws") as ws:
        for number in range(3):
            ws.send_text(json.dumps({"type": "chat", "id": number, "message": f"turn {number}"}))
            frames = frames_until_terminal(ws)
            assert frames[-1] == {"done": True, "finish_reason": "stop", "id": number}
    assert [call.messages[-1].content for call in fake.calls] == ["turn 0", "turn 1", "turn 2"]
    assert [stream.closed for stream in fake.streams] == [1, 1, 1]


@pytest.mark.parametrize(
    ("send", "code", "has_id"),
    [
        ('{"type": "chat", "message": "x"', "invalid_request", False),  # not JSON
        ("[1, 2]", "invalid_request", False),  # not an object
        ('"chat"', "invalid_request", False),
        ('{"message": "x"}', "invalid_request", False),  # no type
        ('{"type": "chat!", "id": "z"}', "invalid_request", True),  # unknown type
        ('{"type": "chat", "id": "z", "message": ""}', "invalid_request", True),  # invalid fields
        ('{"type": "chat", "id": "z", "message": "x", "temperature": "hot"}', "invalid_request", True),
        ('{"type": "chat", "id": "z", "messages": []}', "invalid_request", True),
        ('{"type": "chat", "id": {"no": 1}, "message": ""}', "invalid_request", False),  # unreadable id
        ('{"type": "chat", "id": "z", "message": "' + "x" * 5000 + '"}', "payload_too_large", False),
    ],
)
def test_bad_frames_are_errors_and_the_socket_stays_open(
    client: TestClient[Litestar], fake: FakeProvider, send: str, code: str, has_id: bool
) -> None:
    with client.websocket_connect("/chat/ws") as ws:
        ws.send_text(send)
        (error,) = frames_until_terminal(ws)
        assert error["error"]["code"] == code
        assert error["error"]["retryable"] is False
        assert ("id" in error) is has_id
        if has_id:
            assert error["id"] == "z"
        ws.send_text(json.dumps({"type": "chat", "id": "after", "message": "still here"}))
        assert frames_until_terminal(ws)[-1]["done"] is True
    assert len(fake.calls) == 1


def test_binary_frame_is_invalid_request(client: TestClient[Litestar]) -> None:
    with client.websocket_connect("/chat/ws") as ws:
        ws.send_bytes(b'{"type": "chat", "message": "x"}')
        (error,) = frames_until_terminal(ws)
        assert error["error"]["code"] == "invalid_request"
        assert "binary" in error["error"]["message"]


@pytest.mark.parametrize(
    ("error", "code", "retryable"),
    [
        (ModelNotFound("no such model"), "model_not_found", False),
        (UpstreamUnavailable("could not connect"), "upstream_unavailable", True),
        (UpstreamRejected("context too long"), "upstream_rejected", False),
    ],
)
def test_failures_before_the_stream_are_error_events(error: Exception, code: str, retryable: bool) -> None:
    app = create_app(Settings(), registry=registry_of(FakeProvider(error=error)))
    with TestClient(app) as client, client.websocket_connect("/chat/ws") as ws:
        ws.send_text(json.dumps({"type": "chat", "id": 1, "message": "x"}))
        assert frames_until_terminal(ws) == [
            {"error": {"code": code, "message": str(error), "retryable": retryable}, "id": 1}
        ]


def test_unknown_provider_is_model_not_found_event(client: TestClient[Litestar]) -> None:
    with client.websocket_connect("/chat/ws") as ws:
        ws.send_text(json.dumps({"type": "chat", "id": 1, "message": "x", "model": "local/"}))
        (error,) = frames_until_terminal(ws)
        assert error["error"]["code"] == "invalid_request"


def test_error_mid_stream_is_the_terminal_frame() -> None:
    fake = FakeProvider([[DeltaEvent("partial")]], fail_after=UpstreamUnavailable("went away"))
    with (
        TestClient(create_app(Settings(), registry=registry_of(fake))) as client,
        client.websocket_connect("/chat/ws") as ws,
    ):
        ws.send_text(json.dumps({"type": "chat", "message": "x"}))
        frames = frames_until_terminal(ws)
    assert frames[1:] == [
        {"delta": "partial"},
        {"error": {"code": "upstream_unavailable", "message": "went away", "retryable": True}},
    ]


def test_cancel_with_nothing_running_changes_nothing(client: TestClient[Litestar]) -> None:
    with client.websocket_connect("/chat/ws") as ws:
        ws.send_text('{"type": "cancel"}')
        ws.send_text(json.dumps({"type": "chat", "id": 1, "message": "x"}))
        frames = frames_until_terminal(ws)
    assert frames[0]["id"] == 1
    assert frames[-1] == {"done": True, "finish_reason": "stop", "id": 1}


def test_sockets_per_principal_are_bounded() -> None:
    settings = Settings(websocket=WebSocketSettings(max_sockets_per_principal=2))
    with TestClient(create_app(settings, registry=registry_of(FakeProvider()))) as client:
        with client.websocket_connect("/chat/ws"), client.websocket_connect("/chat/ws"):
            # The test client has no HTTP denial response: the refusal is a close "try again later".
            with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/chat/ws"):
                pass
            assert refused.value.code == 1013
            assert "at most 2 WebSockets" in str(refused.value)
        with client.websocket_connect("/chat/ws") as again:  # a closed socket gives its place back
            again.send_text(json.dumps({"type": "chat", "message": "x"}))
            assert frames_until_terminal(again)[-1]["done"] is True


def test_openapi_describes_the_socket_but_lists_no_websocket_route(client: TestClient[Litestar]) -> None:
    document = client.get("/schema/openapi.json").json()
    assert "/chat/ws" not in document["paths"]
    assert "WS /chat/ws" in document["info"]["description"]
    assert '{"type":"cancel"}' in document["info"]["description"]


def test_one_done_event_is_never_followed_by_more(client: TestClient[Litestar]) -> None:
    fake = FakeProvider([[DeltaEvent("a"), DoneEvent(done=True, finish_reason="length")]])
    with TestClient(create_app(Settings(), registry=registry_of(fake))) as c, c.websocket_connect("/chat/ws") as ws:
        ws.send_text(json.dumps({"type": "chat", "message": "x"}))
        assert frames_until_terminal(ws)[-1] == {"done": True, "finish_reason": "length"}
        ws.send_text('{"type": "cancel"}')
        ws.send_text(json.dumps({"type": "chat", "id": "next", "message": "y"}))
        assert json.loads(ws.receive_text())["id"] == "next"
