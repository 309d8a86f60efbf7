"""``/conversations`` and the claim on a conversation (CONTRACT §6), over real sockets, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import gc
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from app import create_app
from app.config import Settings
from app.sections import DatabaseSettings
from tests.fake_upstream import FakeUpstream, Reply, sse_chunks
from tests.history.conftest import HistoryService, PgDatabases, Serve, StartHistory, history_settings
from tests.history.helpers import chat, conversation, meta_of, wait_for_status


def endless(upstream: FakeUpstream) -> None:
    upstream.on("endless", Reply(writes=sse_chunks(["busy"], finish_reason=None, done=False), hold_open=True))


async def test_a_second_chat_on_a_streaming_conversation_is_409_and_so_is_delete(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    endless(upstream)
    service = await start_history()
    _, lines, _ = await chat(client, service.url, {"message": "start"})
    cid = meta_of(lines)["conversation_id"]
    async with client.stream(
        "POST", f"{service.url}/chat", json={"message": "long one", "conversation_id": cid, "model": "endless"}
    ) as running:
        assert running.status_code == 200
        first = running.aiter_lines()
        assert "meta" in json.loads(await anext(first))
        started = time.monotonic()
        status, problem, response = await chat(client, service.url, {"message": "meanwhile", "conversation_id": cid})
        assert status == 409
        assert time.monotonic() - started >= 0.9  # it waited for a stop that did not come
        assert problem[0]["code"] == "conflict"
        assert response.headers["content-type"].startswith("application/problem+json")
        deleted = await client.delete(f"{service.url}/conversations/{cid}")
        assert deleted.status_code == 409
        assert deleted.json()["code"] == "conflict"
        # store: false reads the history and claims nothing: not a conflict.
        status, _, _ = await chat(client, service.url, {"message": "peek", "conversation_id": cid, "store": False})
        assert status == 200
    # The client left (a stop): the next chat waits for the final write instead of a 409.
    status, lines, _ = await chat(client, service.url, {"message": "resent", "conversation_id": cid})
    assert status == 200
    stored = await conversation(client, service.url, cid)
    assert [m.get("status") for m in stored["messages"]] == [None, "complete", None, "interrupted", None, "complete"]
    assert [m["content"] for m in stored["messages"]][2:4] == ["long one", "busy"]


async def test_a_chat_after_done_is_never_409(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    service = await start_history()
    _, lines, _ = await chat(client, service.url, {"message": "one"})
    cid = meta_of(lines)["conversation_id"]
    for n in range(5):
        started = time.monotonic()
        status, lines, _ = await chat(client, service.url, {"message": f"more {n}", "conversation_id": cid})
        assert status == 200, lines
        assert time.monotonic() - started < 0.9  # no waiting either: the final write came before done


async def test_of_concurrent_chats_on_one_conversation_exactly_one_streams(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.on("slowish", Reply(writes=sse_chunks(["a", "b", "c"]), delay=0.8))
    service = await start_history()
    _, lines, _ = await chat(client, service.url, {"message": "one"})
    cid = meta_of(lines)["conversation_id"]
    results = await asyncio.gather(
        *(
            chat(client, service.url, {"message": f"race {n}", "conversation_id": cid, "model": "slowish"})
            for n in range(6)
        )
    )
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 409, 409, 409, 409, 409]
    stored = await conversation(client, service.url, cid)
    assert len(stored["messages"]) == 4  # the losers stored nothing


async def test_the_list_pages_through_250_conversations_exactly_once(
    start_history: StartHistory, client: httpx.AsyncClient
) -> None:
    service = await start_history()
    made = []
    for n in range(250):
        _, lines, _ = await chat(client, service.url, {"message": f"conversation {n}"})
        made.append(meta_of(lines)["conversation_id"])
    seen: list[dict[str, object]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 7}
        if cursor is not None:
            params["cursor"] = cursor
        page = (await client.get(f"{service.url}/conversations", params=params)).json()
        pages += 1
        assert len(page["data"]) <= 7
        seen.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert page["data"], "a cursor was given for an empty page"
    assert pages == 36  # 35 full pages and one of 5: next_cursor is null exactly at the end
    ids = [item["id"] for item in seen]
    assert len(ids) == len(set(ids)) == 250
    assert set(ids) == set(made)
    order = [(item["updated_at"], item["id"]) for item in seen]
    assert order == sorted(order, reverse=True)
    assert seen[0]["id"] == made[-1]
    full = (await client.get(f"{service.url}/conversations", params={"limit": 100})).json()
    assert [item["id"] for item in full["data"]] == ids[:100]
    last = await client.get(f"{service.url}/conversations", params={"limit": 50, "cursor": cursor or ""})
    assert last.status_code == 400  # an empty cursor is malformed


@pytest.mark.parametrize(
    "query",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"cursor": "bm90LWEtY3Vyc29y"},
        {"cursor": "%%%"},
        {"cursor": "é"},
    ],
)
async def test_bad_list_parameters_are_400(
    start_history: StartHistory, client: httpx.AsyncClient, query: dict[str, object]
) -> None:
    service = await start_history()
    response = await client.get(f"{service.url}/conversations", params=query)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "invalid_request"


async def test_patch_retitles_and_delete_removes_everything(
    start_history: StartHistory, client: httpx.AsyncClient
) -> None:
    service = await start_history()
    _, lines, _ = await chat(client, service.url, {"message": "hello"})
    cid = meta_of(lines)["conversation_id"]
    before = await conversation(client, service.url, cid)
    await asyncio.sleep(0.01)
    response = await client.patch(f"{service.url}/conversations/{cid}", json={"title": "  Rivers \t"})
    assert response.status_code == 200
    summary = response.json()
    assert summary["title"] == "Rivers"
    assert summary["id"] == cid and summary["message_count"] == 2
    assert summary["created_at"] == before["created_at"]
    assert summary["updated_at"] > before["updated_at"]
    for bad in ({"title": "   "}, {"title": "x" * 201}, {"title": 5}, {}, [1]):
        response = await client.patch(f"{service.url}/conversations/{cid}", json=bad)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["code"] == "invalid_request"
    assert (await client.patch(f"{service.url}/conversations/{cid}", json={"title": "y" * 200})).status_code == 200

    response = await client.delete(f"{service.url}/conversations/{cid}")
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get(f"{service.url}/conversations/{cid}")).status_code == 404
    assert (await client.delete(f"{service.url}/conversations/{cid}")).status_code == 404
    assert (await client.get(f"{service.url}/conversations")).json()["data"] == []
    status, _, _ = await chat(client, service.url, {"message": "x", "conversation_id": cid})
    assert status == 404
    from sqlalchemy import text

    async with service.app.state.history.database.engine.connect() as connection:
        left = (await connection.execute(text("SELECT count(*) FROM messages"))).scalar_one()
    assert left == 0


async def test_persistence_off_keeps_chats_stateless_and_routes_404(
    upstream: FakeUpstream, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    settings = history_settings(upstream, "sqlite+aiosqlite:///unused.db")
    settings = Settings(
        providers=settings.providers, database=DatabaseSettings(enabled=False, url=settings.database.url)
    )
    service = HistoryService(settings)
    await service.start()
    try:
        status, lines, _ = await chat(client, service.url, {"message": "hi"})
        assert status == 200 and "conversation_id" not in meta_of(lines)
        status, problem, _ = await chat(client, service.url, {"message": "hi", "conversation_id": str(uuid.uuid4())})
        assert status == 404 and "persistence is off" in problem[0]["detail"].replace(
            "history is off", "persistence is off"
        )
        for method, path in (("GET", ""), ("GET", f"/{uuid.uuid4()}"), ("DELETE", f"/{uuid.uuid4()}")):
            response = await client.request(method, f"{service.url}/conversations{path}")
            assert response.status_code == 404
            assert response.json()["code"] == "not_found"
            assert "database.enabled = false" in response.json()["detail"]
        assert await service.app.state.history_feature.check() == "disabled"
    finally:
        await service.stop()
    assert not (Path.cwd() / "unused.db").exists()


async def test_database_down_is_503_for_stored_chats_and_routes_while_store_false_works(
    upstream: FakeUpstream, client: httpx.AsyncClient, tmp_path: Path, database_url: str
) -> None:
    dead = (
        f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'db.sqlite'}"
        if database_url.startswith("sqlite")
        else "postgresql+asyncpg://postgres:hunter2-secret@127.0.0.1:1/nothing"
    )
    service = HistoryService(history_settings(upstream, dead))
    await service.start()  # a database that does not answer stops nothing
    try:
        status, problem, response = await chat(client, service.url, {"message": "hi"})
        assert status == 503
        assert response.headers["content-type"].startswith("application/problem+json")
        assert problem[0]["code"] == "storage_unavailable"
        assert "database does not answer" in problem[0]["detail"]
        assert "hunter2" not in response.text
        assert len(upstream.requests) == 0  # refused before the upstream was called
        status, lines, _ = await chat(client, service.url, {"message": "hi", "store": False})
        assert status == 200 and lines[-1]["done"] is True
        for path in ("", f"/{uuid.uuid4()}"):
            response = await client.get(f"{service.url}/conversations{path}")
            assert response.status_code == 503
            assert response.json()["code"] == "storage_unavailable"
        ready = await client.get(f"{service.url}/ready")
        assert ready.status_code == 503
        check = ready.json()["checks"]["database"]
        assert check != "ok" and "hunter2" not in ready.text
    finally:
        await service.stop()
        # aiosqlite reports a failed connect's clean-up from its thread: let it land while this
        # test's event loop still runs (else it surfaces as a thread error in the next test).
        gc.collect()
        await asyncio.sleep(0.2)


async def test_ready_says_ok_when_the_database_answers(start_history: StartHistory, client: httpx.AsyncClient) -> None:
    service = await start_history()
    ready = await client.get(f"{service.url}/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"


async def test_database_failure_mid_stream_never_cuts_the_stream(
    upstream: FakeUpstream, client: httpx.AsyncClient, pg: PgDatabases, serve: Serve
) -> None:
    # PostgreSQL only: its connections can be cut from outside.
    database_url = await pg.create()
    name = database_url.rsplit("/", 1)[1]
    upstream.on("paced", Reply(writes=sse_chunks([f"t{n} " for n in range(12)]), delay=0.1))
    service = await serve(history_settings(upstream, database_url, checkpoint_seconds=0.2))
    async with client.stream("POST", f"{service.url}/chat", json={"message": "go", "model": "paced"}) as r:
        lines = r.aiter_lines()
        meta = json.loads(await anext(lines))["meta"]
        await anext(lines)
        # Every connection dropped, and none allowed while the answer streams on.
        await pg.admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await pg.admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        rest = [json.loads(line) async for line in lines]
    assert rest[-1]["done"] is True
    assert "t0 " + "".join(e.get("delta", "") for e in rest) == "".join(f"t{n} " for n in range(12))
    await pg.admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    # Its final write was lost with the database, so the message goes stale: interrupted, with
    # the last checkpoint's text (a prefix of what was sent).
    answer = await wait_for_status(client, service.url, meta["conversation_id"], "interrupted", within=5)
    assert "".join(f"t{n} " for n in range(12)).startswith(answer["content"])


async def test_final_write_is_retried_once_on_a_dropped_connection(
    upstream: FakeUpstream, client: httpx.AsyncClient, pg: PgDatabases, serve: Serve
) -> None:
    # PostgreSQL only: its connections can be cut from outside.
    database_url = await pg.create()
    name = database_url.rsplit("/", 1)[1]
    upstream.on("pause", Reply(writes=sse_chunks(["before", " after"]), delay=0.5))
    service = await serve(history_settings(upstream, database_url, checkpoint_seconds=60))
    async with client.stream("POST", f"{service.url}/chat", json={"message": "go", "model": "pause"}) as r:
        lines = r.aiter_lines()
        meta = json.loads(await anext(lines))["meta"]
        await anext(lines)
        # The pool's connections die while the answer streams; the final write meets a dead one.
        await pg.admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        rest = [json.loads(line) async for line in lines]
    assert rest[-1]["done"] is True
    stored = await conversation(client, service.url, meta["conversation_id"])
    assert stored["messages"][-1]["status"] == "complete"
    assert stored["messages"][-1]["content"] == "before after"


def test_openapi_documents_the_conversation_routes_and_their_problems() -> None:
    app = create_app(Settings(database=DatabaseSettings(enabled=False)))
    document = app.openapi_schema.to_schema()
    paths = document["paths"]
    assert set(paths["/conversations"]) == {"get"}
    assert set(paths["/conversations/{conversation_id}"]) == {"get", "patch", "delete"}
    listing = paths["/conversations"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"limit", "cursor"}
    assert {"200", "400", "503"} <= set(listing["responses"])
    assert "application/problem+json" in listing["responses"]["503"]["content"]
    assert {"204", "404", "409", "503"} <= set(paths["/conversations/{conversation_id}"]["delete"]["responses"])
    assert {"200", "400", "404"} <= set(paths["/conversations/{conversation_id}"]["patch"]["responses"])
    chat_responses = paths["/chat"]["post"]["responses"]
    assert "409" in chat_responses and "503" in chat_responses
    chat_fields = document["components"]["schemas"]["ChatRequest"]["properties"]
    assert {"conversation_id", "store"} <= set(chat_fields)
