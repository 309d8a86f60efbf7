"""``WS /chat/ws`` stores and continues conversations as ``POST /chat`` does (CONTRACT §6, §8), over real sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from tests.fake_upstream import FakeUpstream, Reply
from tests.history.conftest import StartHistory
from tests.history.helpers import conversation, wait_for_status

PRINCIPAL = {"X-Test-Principal": "carol"}


async def _chat(ws: ClientConnection, frame: dict[str, Any]) -> list[dict[str, Any]]:
    await ws.send(json.dumps({"type": "chat", **frame}))
    events = []
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        events.append(event)
        if event.get("done") or "error" in event:
            return events


async def test_chats_over_one_socket_are_stored_and_continued(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.on("a", Reply.sse(["Rhine", ", Danube"]))
    upstream.on("b", Reply.sse(["The Danube."]))
    service = await start_history()
    url = service.url.replace("http://", "ws://") + "/chat/ws"
    async with connect(url, additional_headers=PRINCIPAL) as ws:
        first = await _chat(ws, {"id": 1, "message": "Name two rivers", "model": "a"})
        meta = first[0]["meta"]
        cid = meta["conversation_id"]
        second = await _chat(ws, {"id": 2, "message": "Which is longer?", "model": "b", "conversation_id": cid})
    assert second[0]["meta"]["conversation_id"] == cid
    assert second[-1] == {"done": True, "finish_reason": "stop", "id": 2}
    assert upstream.requests[-1].body["messages"] == [
        {"role": "user", "content": "Name two rivers"},
        {"role": "assistant", "content": "Rhine, Danube"},
        {"role": "user", "content": "Which is longer?"},
    ]
    stored = await conversation(client, service.url, cid, principal="carol")
    assert [(m["role"], m["content"], m.get("status")) for m in stored["messages"]] == [
        ("user", "Name two rivers", None),
        ("assistant", "Rhine, Danube", "complete"),
        ("user", "Which is longer?", None),
        ("assistant", "The Danube.", "complete"),
    ]
    assert stored["messages"][1]["id"] == meta["message_id"]
    # Another principal's socket cannot continue it.
    async with connect(url, additional_headers={"X-Test-Principal": "mallory"}) as ws:
        refused = await _chat(ws, {"message": "hi", "conversation_id": cid})
    assert refused == [{"error": {"code": "not_found", "message": refused[0]["error"]["message"], "retryable": False}}]


async def test_a_cancel_stores_exactly_what_the_socket_was_sent_as_interrupted(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.on("slow", Reply.sse([f"piece{n} " for n in range(200)], delay=0.02))
    service = await start_history()
    url = service.url.replace("http://", "ws://") + "/chat/ws"
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "chat", "message": "go on", "model": "slow"}))
        events = [json.loads(await ws.recv())]
        while len(events) < 6:
            events.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        await ws.send(json.dumps({"type": "cancel"}))
        while not events[-1].get("done"):
            events.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    assert events[-1] == {"done": True, "finish_reason": "cancelled"}
    await asyncio.wait_for(upstream.requests[-1].disconnected.wait(), 1.0)
    sent = "".join(event["delta"] for event in events if "delta" in event)
    assert sent.startswith("piece0 piece1 ") and len(sent) < len("".join(f"piece{n} " for n in range(200)))
    cid = events[0]["meta"]["conversation_id"]
    answer = await wait_for_status(client, service.url, cid, "interrupted")
    assert answer["content"] == sent
