"""Resume across replicas: two service processes on one database and one Redis (``streams.redis_url``)."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import redis

from tests.fake_upstream import FakeUpstream, Reply, sse_chunks
from tests.history.helpers import conversation, wait_for_status
from tests.service_process import ServiceProcess, clean_env, start_service_process
from tests.usechat.test_resume import TOKENS, WHOLE, leave_after_first_delta
from tests.usechat.ui_helpers import ui_parts, ui_text

Spawn = Callable[[str], Awaitable[ServiceProcess]]


@pytest.fixture
async def spawn(
    upstream: FakeUpstream, database_url: str, redis_url: str, prefix: str, tmp_path: Path
) -> AsyncIterator[Spawn]:
    started: list[ServiceProcess] = []

    async def start(name: str) -> ServiceProcess:
        settings = clean_env(
            APP_ENV="testing",
            AGENT_PROVIDERS__LOCAL__BASE_URL=upstream.base_url,
            AGENT_PROVIDERS__LOCAL__MODEL="fake-model",
            AGENT_DATABASE__URL=database_url,
            AGENT_STREAMS__RESUME="true",
            AGENT_STREAMS__REDIS_URL=redis_url,
            AGENT_RATE_LIMIT__KEY_PREFIX=prefix,
            AGENT_SHUTDOWN_GRACE_SECONDS="0.5",
        )
        process = await start_service_process(tmp_path / f"{name}.log", settings)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


async def test_a_resume_on_another_replica_replays_and_follows(
    spawn: Spawn, upstream: FakeUpstream, client: httpx.AsyncClient, redis_url: str, prefix: str
) -> None:
    first, second = await spawn("first"), await spawn("second")
    upstream.on("fake-model", Reply(writes=sse_chunks(TOKENS), delay=0.05))
    start = await leave_after_first_delta(client, first.url, "replicated")
    # Every key this answer made in Redis expires on its own.
    keys = redis.Redis.from_url(redis_url)
    try:
        made = list(keys.scan_iter(match=prefix + "streams:*"))
        assert len(made) == 2, made  # the answer's entries and its conversation's index
        assert all(keys.ttl(key) > 0 for key in made)
    finally:
        keys.close()
    resumed = await client.get(f"{second.url}/api/chat/replicated/stream")
    assert resumed.status_code == 200
    parts = ui_parts(resumed)
    assert parts[0] == start
    assert ui_text(parts) == WHOLE
    assert parts[-2]["finishReason"] == "stop" and parts[-1] == "[DONE]"
    conversation_id = start["messageMetadata"]["conversation_id"]
    stored = await wait_for_status(client, second.url, conversation_id, "complete")
    assert stored["content"] == WHOLE
    for service in (first, second):
        assert (await client.get(f"{service.url}/api/chat/replicated/stream")).status_code == 204
        assert (await client.get(f"{service.url}/conversations/{conversation_id}/stream")).status_code == 204
    assert upstream.requests[-1].disconnected_at is None  # it ran to its end


async def test_stop_on_another_replica_stops_the_generation(
    spawn: Spawn, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    first, second = await spawn("first"), await spawn("second")
    upstream.on("fake-model", Reply(writes=sse_chunks(TOKENS), delay=0.1))
    start = await leave_after_first_delta(client, first.url, "stop-elsewhere")
    conversation_id = start["messageMetadata"]["conversation_id"]
    reader = asyncio.create_task(client.get(f"{second.url}/conversations/{conversation_id}/stream"))
    await asyncio.sleep(0.3)
    stopped = await client.post(f"{second.url}/conversations/{conversation_id}/stop")
    assert stopped.status_code == 200, stopped.text
    await asyncio.wait_for(upstream.requests[-1].disconnected.wait(), 1)
    lines = [json.loads(line) for line in (await asyncio.wait_for(reader, 5)).text.splitlines()]
    assert lines[0]["meta"]["conversation_id"] == conversation_id
    assert lines[-1] == {"done": True, "finish_reason": "cancelled"}
    message = (await conversation(client, second.url, conversation_id))["messages"][-1]
    assert message["status"] == "interrupted"
    assert (await client.post(f"{second.url}/conversations/{conversation_id}/stop")).status_code == 204


async def test_shutdown_stops_a_detached_answer_and_its_readers(
    spawn: Spawn, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    first, second = await spawn("first"), await spawn("second")
    upstream.on("fake-model", Reply(writes=sse_chunks(TOKENS), delay=0.2))
    start = await leave_after_first_delta(client, first.url, "shut-down")
    conversation_id = start["messageMetadata"]["conversation_id"]
    reader = asyncio.create_task(client.get(f"{second.url}/api/chat/shut-down/stream"))
    await asyncio.sleep(0.3)
    first.signal(signal.SIGTERM)
    assert await first.wait() in (0, -signal.SIGTERM)  # as the operations tests accept
    parts = ui_parts(await asyncio.wait_for(reader, 10))
    errors = [p for p in parts if isinstance(p, dict) and p["type"] == "data-error"]
    assert errors and errors[0]["data"]["code"] == "server_shutdown"
    assert parts[-2] == {"type": "finish", "finishReason": "error"}
    message = (await conversation(client, second.url, conversation_id))["messages"][-1]
    assert message["status"] == "interrupted" and WHOLE.startswith(message["content"])
