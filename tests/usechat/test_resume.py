"""Resume in one process (``streams.resume``): a client that leaves only detaches; readers replay then follow; /stop."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import msgspec
from websockets.asyncio.client import connect

from app.sections import StreamsSettings
from tests.fake_upstream import FakeUpstream, Reply, sse_chunks
from tests.history.conftest import HistoryService, Serve, history_settings
from tests.history.helpers import conversation, wait_for_status
from tests.usechat.ui_helpers import ui_parts, ui_text, user

TOKENS = [f"t{n} " for n in range(40)]
WHOLE = "".join(TOKENS)


async def resumable(serve: Serve, upstream: FakeUpstream, database_url: str, *, resume: bool = True) -> HistoryService:
    settings = history_settings(upstream, database_url)
    return await serve(msgspec.structs.replace(settings, streams=StreamsSettings(resume=resume)))


def slow(upstream: FakeUpstream, delay: float = 0.03) -> None:
    upstream.on("fake-model", Reply(writes=sse_chunks(TOKENS), delay=delay))


async def leave_after_first_delta(client: httpx.AsyncClient, url: str, chat_id: str) -> dict[str, Any]:
    """POST /api/chat, read until the first text-delta, then go away; the start part."""
    body = {"id": chat_id, "messages": [user("go")], "trigger": "submit-message"}
    async with client.stream("POST", f"{url}/api/chat", json=body) as response:
        assert response.status_code == 200
        seen = b""
        async for chunk in response.aiter_bytes():
            seen += chunk
            if b"text-delta" in seen:
                break
    start: dict[str, Any] = json.loads(seen.split(b"\n\n")[0][len(b"data: ") :])
    assert start["type"] == "start"
    return start


async def test_a_client_that_leaves_detaches_and_a_reader_gets_the_whole_answer(
    serve: Serve, upstream: FakeUpstream, database_url: str, client: httpx.AsyncClient
) -> None:
    service = await resumable(serve, upstream, database_url)
    slow(upstream)
    start = await leave_after_first_delta(client, service.url, "reload-me")
    await asyncio.sleep(0.2)
    assert upstream.requests[-1].disconnected_at is None  # the generation runs on
    resumed = await client.get(f"{service.url}/api/chat/reload-me/stream")
    assert resumed.status_code == 200
    assert resumed.headers["x-vercel-ai-ui-message-stream"] == "v1"
    parts = ui_parts(resumed)
    assert parts[0] == start  # replayed from the beginning, then followed to the end
    assert ui_text(parts) == WHOLE
    assert parts[-2]["type"] == "finish" and parts[-2]["finishReason"] == "stop" and parts[-1] == "[DONE]"
    conversation_id = start["messageMetadata"]["conversation_id"]
    stored = await wait_for_status(client, service.url, conversation_id, "complete")
    assert stored["content"] == WHOLE
    # After the end: nothing streams under that id.
    assert (await client.get(f"{service.url}/api/chat/reload-me/stream")).status_code == 204
    assert (await client.get(f"{service.url}/conversations/{conversation_id}/stream")).status_code == 204


async def test_ndjson_resume_and_who_may_see_it(
    serve: Serve, upstream: FakeUpstream, database_url: str, client: httpx.AsyncClient
) -> None:
    service = await resumable(serve, upstream, database_url)
    slow(upstream)
    start = await leave_after_first_delta(client, service.url, "nd")
    conversation_id = start["messageMetadata"]["conversation_id"]
    # Another principal: the chat id streams nothing of theirs, the conversation is not theirs.
    other = {"X-Test-Principal": "mallory"}
    assert (await client.get(f"{service.url}/api/chat/nd/stream", headers=other)).status_code == 204
    assert (await client.get(f"{service.url}/conversations/{conversation_id}/stream", headers=other)).status_code == 404
    assert (await client.post(f"{service.url}/conversations/{conversation_id}/stop", headers=other)).status_code == 404
    assert (await client.get(f"{service.url}/api/chat/never-used/stream")).status_code == 204
    unknown = "00000000-0000-4000-8000-000000000000"
    assert (await client.get(f"{service.url}/conversations/{unknown}/stream")).status_code == 404
    assert (await client.get(f"{service.url}/conversations/not-a-uuid/stream")).status_code == 404
    resumed = await client.get(f"{service.url}/conversations/{conversation_id}/stream")
    assert resumed.status_code == 200 and resumed.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in resumed.text.splitlines()]
    assert lines[0]["meta"]["conversation_id"] == conversation_id
    assert "".join(line.get("delta", "") for line in lines) == WHOLE
    assert lines[-1]["done"] is True and lines[-1]["finish_reason"] == "stop"


async def test_stop_ends_the_answer_for_every_reader(
    serve: Serve, upstream: FakeUpstream, database_url: str, client: httpx.AsyncClient
) -> None:
    service = await resumable(serve, upstream, database_url)
    slow(upstream, delay=0.05)
    start = await leave_after_first_delta(client, service.url, "stop-me")
    conversation_id = start["messageMetadata"]["conversation_id"]
    reader = asyncio.create_task(client.get(f"{service.url}/conversations/{conversation_id}/stream"))
    ui_reader = asyncio.create_task(client.get(f"{service.url}/api/chat/stop-me/stream"))
    await asyncio.sleep(0.2)
    stopped = await client.post(f"{service.url}/conversations/{conversation_id}/stop")
    assert stopped.status_code == 200 and stopped.json()["stopped"] is True
    await asyncio.wait_for(upstream.requests[-1].disconnected.wait(), 1)  # upstream closed within a second
    lines = [json.loads(line) for line in (await asyncio.wait_for(reader, 5)).text.splitlines()]
    assert lines[-1] == {"done": True, "finish_reason": "cancelled"}
    ui = ui_parts(await asyncio.wait_for(ui_reader, 5))
    assert ui[-2] == {"type": "finish", "finishReason": "other"} and ui[-1] == "[DONE]"
    # Stored interrupted by the time /stop answered, with exactly the text streamed.
    message = (await conversation(client, service.url, conversation_id))["messages"][-1]
    assert message["status"] == "interrupted"
    assert message["content"] == "".join(line.get("delta", "") for line in lines)
    assert (await client.post(f"{service.url}/conversations/{conversation_id}/stop")).status_code == 204


async def test_with_resume_off_a_client_that_leaves_stops_the_answer(
    serve: Serve, upstream: FakeUpstream, database_url: str, client: httpx.AsyncClient
) -> None:
    service = await resumable(serve, upstream, database_url, resume=False)
    slow(upstream)
    start = await leave_after_first_delta(client, service.url, "no-resume")
    await asyncio.wait_for(upstream.requests[-1].disconnected.wait(), 1)
    assert (await client.get(f"{service.url}/api/chat/no-resume/stream")).status_code == 204
    conversation_id = start["messageMetadata"]["conversation_id"]
    await wait_for_status(client, service.url, conversation_id, "interrupted")


async def test_an_answer_that_is_not_stored_stops_on_disconnect_even_with_resume_on(
    serve: Serve, upstream: FakeUpstream, database_url: str, client: httpx.AsyncClient
) -> None:
    service = await resumable(serve, upstream, database_url)
    slow(upstream)
    body = {"message": "go", "store": False}
    async with client.stream("POST", f"{service.url}/chat", json=body) as response:
        async for chunk in response.aiter_bytes():
            if b"delta" in chunk:
                break
    await asyncio.wait_for(upstream.requests[-1].disconnected.wait(), 1)


async def test_a_websocket_that_closes_detaches_and_a_cancel_still_stops(
    serve: Serve, upstream: FakeUpstream, database_url: str, client: httpx.AsyncClient
) -> None:
    service = await resumable(serve, upstream, database_url)
    slow(upstream)
    ws_url = service.url.replace("http://", "ws://") + "/chat/ws"
    async with connect(ws_url) as ws:
        await ws.send(json.dumps({"type": "chat", "message": "go"}))
        meta = json.loads(await ws.recv())["meta"]
        assert "delta" in json.loads(await ws.recv())
    # The socket is closed: the answer runs on, and a reader gets it whole.
    resumed = await client.get(f"{service.url}/conversations/{meta['conversation_id']}/stream")
    lines = [json.loads(line) for line in resumed.text.splitlines()]
    assert "".join(line.get("delta", "") for line in lines) == WHOLE
    assert upstream.requests[-1].disconnected_at is None
    # A cancel frame is a real stop.
    async with connect(ws_url) as ws:
        await ws.send(json.dumps({"type": "chat", "message": "again"}))
        json.loads(await ws.recv())
        json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "cancel"}))
        last: dict[str, Any] = {}
        while "done" not in last and "error" not in last:
            last = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert last["done"] is True and last["finish_reason"] == "cancelled"
    await asyncio.wait_for(upstream.requests[-1].disconnected.wait(), 1)


async def test_a_chat_ids_stream_includes_an_answer_that_post_chat_started_on_its_conversation(
    serve: Serve, upstream: FakeUpstream, database_url: str, client: httpx.AsyncClient
) -> None:
    service = await resumable(serve, upstream, database_url)
    upstream.on("fake-model", Reply(writes=sse_chunks(["first"])))
    first = ui_parts(await client.post(f"{service.url}/api/chat", json={"id": "both", "messages": [user("hi")]}))
    conversation_id = first[0]["messageMetadata"]["conversation_id"]
    slow(upstream)
    body = {"message": "more", "conversation_id": conversation_id}
    async with client.stream("POST", f"{service.url}/chat", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if '"delta"' in line:
                break
        resumed = await client.get(f"{service.url}/api/chat/both/stream")
        assert resumed.status_code == 200
        assert ui_text(ui_parts(resumed)) == WHOLE
