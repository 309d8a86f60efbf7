"""What a stored chat keeps (CONTRACT §6), over real sockets, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

import httpx
from sqlalchemy import event

from tests.fake_upstream import FakeUpstream, Reply, sse_chunks
from tests.history.conftest import StartHistory
from tests.history.helpers import chat, conversation, meta_of, reasoning_event, text_of, wait_for_status

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def test_complete_answer_is_stored_with_its_ids_in_meta(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.on(
        "thinker",
        Reply(
            writes=[
                reasoning_event("let me think"),
                *sse_chunks(["Hi", " there"], usage={"prompt_tokens": 9, "completion_tokens": 2}),
            ]
        ),
    )
    service = await start_history()
    message = "  Tell me\t\tabout   rivers,\n" + "and lakes " * 20
    status, lines, _ = await chat(client, service.url, {"message": message, "model": "thinker"})

    assert status == 200
    meta = meta_of(lines)
    assert uuid.UUID(meta["conversation_id"]) and uuid.UUID(meta["message_id"])
    assert lines[-1]["done"] is True
    stored = await conversation(client, service.url, meta["conversation_id"])
    assert stored["title"] == " ".join(message.split())[:80]
    assert len(stored["title"]) == 80
    user, answer = stored["messages"]
    assert (user["role"], user["content"]) == ("user", message)
    assert "status" not in user
    assert answer["id"] == meta["message_id"]
    assert answer["role"] == "assistant"
    assert answer["status"] == "complete"
    assert answer["content"] == "Hi there" == text_of(lines)
    assert answer["reasoning"] == "let me think"
    assert answer["finish_reason"] == "stop"
    assert answer["usage"] == {"prompt_tokens": 9, "completion_tokens": 2}
    assert (answer["model"], answer["provider"]) == ("thinker", "local")
    assert "error" not in answer
    for moment in (stored["created_at"], stored["updated_at"], user["created_at"], answer["created_at"]):
        assert TIME.fullmatch(moment), moment
    assert user["created_at"] <= answer["created_at"]
    listed = (await client.get(f"{service.url}/conversations")).json()
    assert listed["data"][0]["message_count"] == 2
    assert listed["data"][0]["id"] == meta["conversation_id"]


async def test_history_goes_upstream_oldest_first_without_reasoning_or_errors(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.on("broken", Reply(writes=sse_chunks(["half"], finish_reason=None, done=False), close_abruptly=True))
    upstream.on("thinker", Reply(writes=[reasoning_event("secret thoughts"), *sse_chunks(["two"])]))
    service = await start_history()
    _, first, _ = await chat(client, service.url, {"message": "one"})
    cid = meta_of(first)["conversation_id"]
    await chat(client, service.url, {"message": "ask", "conversation_id": cid, "model": "thinker"})
    status, failed, _ = await chat(client, service.url, {"message": "fails", "conversation_id": cid, "model": "broken"})
    assert status == 200 and failed[-1]["error"]["code"] == "stream_interrupted"
    await chat(client, service.url, {"message": "last", "conversation_id": cid, "system": "Be brief."})

    sent = upstream.requests[-1].body["messages"]
    assert sent == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "Hello from the fake upstream!"},
        {"role": "user", "content": "ask"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "fails"},  # its answer failed: only the answer is left out
        {"role": "user", "content": "last"},
    ]
    assert "store" not in upstream.requests[-1].body
    assert "conversation_id" not in upstream.requests[-1].body
    stored = await conversation(client, service.url, cid)
    failed_answer = stored["messages"][5]
    assert failed_answer["status"] == "error"
    assert failed_answer["content"] == "half"
    assert failed_answer["error"]["code"] == "stream_interrupted"
    assert failed_answer["error"]["message"]


async def test_history_is_cut_to_the_newest_turns_that_fit(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    for n in range(4):
        upstream.on(f"m{n}", Reply.sse([f"answer {n}"]))
    service = await start_history(max_messages=3, max_chars=1000)
    _, lines, _ = await chat(client, service.url, {"message": "q0", "model": "m0"})
    cid = meta_of(lines)["conversation_id"]
    for n in (1, 2, 3):
        await chat(client, service.url, {"message": f"q{n}", "model": f"m{n}", "conversation_id": cid})
    # Six stored turns before the new one; max_messages 3 keeps the newest three.
    assert upstream.requests[-1].body["messages"] == [
        {"role": "assistant", "content": "answer 1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "answer 2"},
        {"role": "user", "content": "q3"},
    ]


async def test_history_is_cut_by_characters_too(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.on("long", Reply.sse(["x" * 30]))
    service = await start_history(max_chars=40)
    _, lines, _ = await chat(client, service.url, {"message": "first question", "model": "long"})
    cid = meta_of(lines)["conversation_id"]
    big = "y" * 500  # the new message does not count toward history.max_chars
    await chat(client, service.url, {"message": big, "model": "long", "conversation_id": cid})
    # 30 (answer) + 14 (question) > 40: only the answer fits.
    assert upstream.requests[-1].body["messages"] == [
        {"role": "assistant", "content": "x" * 30},
        {"role": "user", "content": big},
    ]


async def test_store_false_touches_nothing_and_messages_default_to_stateless(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    service = await start_history()
    status, lines, _ = await chat(client, service.url, {"message": "hi", "store": False})
    assert status == 200 and "conversation_id" not in meta_of(lines) and "message_id" not in meta_of(lines)
    status, lines, _ = await chat(client, service.url, {"messages": [{"role": "user", "content": "hi"}]})
    assert status == 200 and "conversation_id" not in meta_of(lines)
    assert (await client.get(f"{service.url}/conversations")).json() == {"data": [], "next_cursor": None}

    status, lines, _ = await chat(
        client, service.url, {"messages": [{"role": "user", "content": "keep"}], "store": True}
    )
    assert status == 200 and "conversation_id" in meta_of(lines)
    cid = meta_of(lines)["conversation_id"]
    before = await conversation(client, service.url, cid)
    status, lines, _ = await chat(client, service.url, {"message": "stateless", "conversation_id": cid, "store": False})
    assert status == 200 and "conversation_id" not in meta_of(lines)
    assert upstream.requests[-1].body["messages"][:2] == [
        {"role": "user", "content": "keep"},
        {"role": "assistant", "content": "Hello from the fake upstream!"},
    ]
    assert await conversation(client, service.url, cid) == before


async def test_conversation_ids_that_name_nothing_of_the_principal_are_404(
    start_history: StartHistory, client: httpx.AsyncClient
) -> None:
    service = await start_history()
    _, lines, _ = await chat(client, service.url, {"message": "mine"}, principal="alice")
    cid = meta_of(lines)["conversation_id"]
    for other, principal in ((cid, "bob"), (str(uuid.uuid4()), "alice"), ("not-a-uuid", "alice")):
        for store in (True, False):
            status, body, response = await chat(
                client, service.url, {"message": "x", "conversation_id": other, "store": store}, principal
            )
            assert status == 404, body
            assert response.headers["content-type"].startswith("application/problem+json")
            assert body[0]["code"] == "not_found"
    for method in ("GET", "PATCH", "DELETE"):
        response = await client.request(
            method, f"{service.url}/conversations/{cid}", json={"title": "x"}, headers={"X-Test-Principal": "bob"}
        )
        assert response.status_code == 404, (method, response.text)
        assert response.json()["code"] == "not_found"
    # bob's list is empty; alice still has hers, untouched.
    bobs = await client.get(f"{service.url}/conversations", headers={"X-Test-Principal": "bob"})
    assert bobs.json()["data"] == []
    assert len((await conversation(client, service.url, cid, "alice"))["messages"]) == 2


async def test_messages_with_conversation_id_is_400(start_history: StartHistory, client: httpx.AsyncClient) -> None:
    service = await start_history()
    _, lines, _ = await chat(client, service.url, {"message": "x"})
    body = {"messages": [{"role": "user", "content": "y"}], "conversation_id": meta_of(lines)["conversation_id"]}
    status, problem, _ = await chat(client, service.url, body)
    assert status == 400
    assert problem[0]["code"] == "invalid_request"
    assert "conversation_id" in problem[0]["detail"]


async def test_an_answer_refused_before_it_started_leaves_nothing_stored(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.on("down", Reply.json({"error": {"message": "overloaded"}}, 500))
    service = await start_history()
    status, _, _ = await chat(client, service.url, {"message": "new", "model": "down"})
    assert status == 502
    assert (await client.get(f"{service.url}/conversations")).json()["data"] == []

    _, lines, _ = await chat(client, service.url, {"message": "kept"})
    cid = meta_of(lines)["conversation_id"]
    before = await conversation(client, service.url, cid)
    listed_before = (await client.get(f"{service.url}/conversations")).json()
    status, _, _ = await chat(client, service.url, {"message": "lost", "model": "down", "conversation_id": cid})
    assert status == 502
    assert await conversation(client, service.url, cid) == before
    assert (await client.get(f"{service.url}/conversations")).json() == listed_before
    # ...and the conversation is free for the next chat.
    status, _, _ = await chat(client, service.url, {"message": "again", "conversation_id": cid})
    assert status == 200


async def test_client_disconnect_stores_exactly_what_the_client_received(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    tokens = ["Once", " upon", " a", " time", " ünïcödé 🌊"]
    upstream.on("endless", Reply(writes=sse_chunks(tokens, finish_reason=None, done=False), hold_open=True))
    service = await start_history()
    received: list[str] = []
    async with client.stream("POST", f"{service.url}/chat", json={"message": "story", "model": "endless"}) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            event = json.loads(line)
            if "meta" in event:
                meta = event["meta"]
            elif "delta" in event:
                received.append(event["delta"])
            if len(received) == len(tokens):
                break  # the upstream sends nothing more; leaving closes the socket
    answer = await wait_for_status(client, service.url, meta["conversation_id"], "interrupted")
    assert answer["content"] == "".join(received) == "".join(tokens)
    assert "finish_reason" not in answer


async def test_upstream_dying_mid_stream_is_stored_as_error_with_the_text_sent(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.on(
        "dies", Reply(writes=sse_chunks(["kept", " text"], finish_reason=None, done=False), close_abruptly=True)
    )
    service = await start_history()
    status, lines, _ = await chat(client, service.url, {"message": "go", "model": "dies"})
    assert status == 200
    assert lines[-1]["error"]["code"] == "stream_interrupted"
    stored = await conversation(client, service.url, meta_of(lines)["conversation_id"])
    answer = stored["messages"][-1]
    assert answer["status"] == "error"
    assert answer["content"] == text_of(lines) == "kept text"
    assert answer["error"] == {"code": "stream_interrupted", "message": lines[-1]["error"]["message"]}


async def test_streaming_answer_checkpoints_text_and_heartbeat(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.on("slow", Reply(writes=sse_chunks(["a", "b"], finish_reason=None, done=False), hold_open=True))
    service = await start_history(checkpoint_seconds=0.2)
    async with client.stream("POST", f"{service.url}/chat", json={"message": "go", "model": "slow"}) as r:
        lines = r.aiter_lines()
        meta = json.loads(await anext(lines))["meta"]
        assert json.loads(await anext(lines)) == {"delta": "a"}
        assert json.loads(await anext(lines)) == {"delta": "b"}
        await asyncio.sleep(0.6)  # at least two checkpoints
        stored = await conversation(client, service.url, meta["conversation_id"])
        answer = stored["messages"][-1]
        assert answer["id"] == meta["message_id"]
        assert answer["status"] == "streaming"
        assert answer["content"] == "ab"
        # Well past three checkpoint periods of wall time, the heartbeat keeps it alive.
        await asyncio.sleep(0.5)
        assert (await conversation(client, service.url, meta["conversation_id"]))["messages"][-1]["status"] == (
            "streaming"
        )
    await wait_for_status(client, service.url, meta["conversation_id"], "interrupted")


async def test_database_writes_per_answer_do_not_grow_with_tokens(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.on("short", Reply.sse(["x"] * 5))
    upstream.on("long", Reply.sse(["x"] * 3000, per_write=7))
    service = await start_history()
    writes: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        writes.append(statement)  # every statement (PostgreSQL's writes are WITH … statements)

    engine = service.app.state.history.database.engine
    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        per_answer = []
        for model in ("short", "long", "short", "long"):
            writes.clear()
            status, lines, _ = await chat(client, service.url, {"message": "go", "model": model})
            assert status == 200 and lines[-1]["done"] is True
            await asyncio.sleep(0.05)
            per_answer.append(len(writes))
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    # 5 tokens or 3,000: the same handful of statements (the stored turns, the answer's row, its
    # final write; one fewer or more when the answer ends before its row was written), none per token.
    assert max(per_answer) <= 6, per_answer
    assert len(set(per_answer)) <= 2 and max(per_answer) - min(per_answer) <= 1, per_answer
