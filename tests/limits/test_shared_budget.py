"""Two service processes and one Redis share one budget (CONTRACT §7); a killed process's stream slot comes back.

The services are real processes configured by environment variables only, as an operator runs
them; the upstream is the fake, in this process; Redis is this machine's, under a prefix of this
test's own.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.auth import key_hash, new_api_key
from tests.fake_upstream import FakeUpstream, Reply, sse_chunks
from tests.service_process import ServiceProcess, clean_env, start_service_process

KEY = new_api_key()


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        up.on("hold", Reply(writes=sse_chunks(["a"], finish_reason=None, done=False), hold_open=True))
        yield up


async def two_services(tmp_path: Path, upstream: FakeUpstream, **settings: str) -> list[ServiceProcess]:
    env = clean_env(
        APP_ENV="testing",
        AGENT_PROVIDERS__LOCAL__BASE_URL=upstream.base_url,
        AGENT_RATE_LIMIT__ENABLED="true",
        **settings,
    )
    first, second = await asyncio.gather(
        start_service_process(tmp_path / "a.log", env), start_service_process(tmp_path / "b.log", env)
    )
    return [first, second]


async def test_two_processes_share_requests_and_auth_failures(
    tmp_path: Path, upstream: FakeUpstream, redis_url: str, prefix: str
) -> None:
    services = await two_services(
        tmp_path,
        upstream,
        AGENT_RATE_LIMIT__REDIS_URL=redis_url,
        AGENT_RATE_LIMIT__KEY_PREFIX=prefix,
        AGENT_RATE_LIMIT__REQUESTS_PER_MINUTE="4",
        AGENT_RATE_LIMIT__AUTH_FAILURES_PER_MINUTE="2",
        AGENT_AUTH__ENABLED="true",
        AGENT_AUTH__API_KEYS__ALICE=key_hash(KEY),
    )
    try:
        async with httpx.AsyncClient(timeout=10, headers={"X-API-Key": KEY}) as client:
            for number in range(4):
                service = services[number % 2]
                response = await client.post(f"{service.url}/chat", json={"message": "hi"})
                assert response.status_code == 200, response.text
            for service in services:  # four were used, two on each: the fifth is refused on both
                response = await client.post(f"{service.url}/chat", json={"message": "hi"})
                assert response.status_code == 429, response.text
                assert response.json()["code"] == "rate_limited"
                assert 1 <= int(response.headers["retry-after"]) <= 60
            # Failed authentications from one address, counted across both processes.
            for service in services:
                wrong = await client.post(f"{service.url}/chat", json={"message": "hi"}, headers={"X-API-Key": "x"})
                assert wrong.status_code == 401
            blocked = await client.get(f"{services[0].url}/schema/openapi.json")
            assert blocked.status_code == 200  # open routes stay open
            blocked = await client.post(f"{services[0].url}/chat", json={"message": "hi"})
            assert blocked.status_code == 429
            assert "failed authentications" in blocked.json()["detail"]
    finally:
        for service in services:
            service.stop()


async def test_a_killed_processs_stream_slot_comes_back(
    tmp_path: Path, upstream: FakeUpstream, redis_url: str, prefix: str
) -> None:
    slot_seconds = 2.0
    doomed, survivor = await two_services(
        tmp_path,
        upstream,
        AGENT_RATE_LIMIT__REDIS_URL=redis_url,
        AGENT_RATE_LIMIT__KEY_PREFIX=prefix,
        AGENT_RATE_LIMIT__CONCURRENT_STREAMS="1",
        AGENT_RATE_LIMIT__STREAM_SLOT_SECONDS=str(slot_seconds),
    )
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            async with client.stream("POST", f"{doomed.url}/chat", json={"message": "hi", "model": "hold"}) as held:
                assert held.status_code == 200
                # Read through one iterator that stays referenced: leaving an `async for` over
                # httpx's lines would finalise it, and that closes the connection (the client leaves).
                lines = held.aiter_lines()
                while '"delta"' not in await anext(lines):
                    pass  # streaming: the slot is taken
                refused = await client.post(f"{survivor.url}/chat", json={"message": "hi"})
                assert refused.status_code == 429
                assert refused.headers["retry-after"] == "1"
                # The holder renews its slot: it outlives its own expiry while the process lives.
                await asyncio.sleep(slot_seconds * 1.5)
                assert (await client.post(f"{survivor.url}/chat", json={"message": "hi"})).status_code == 429
                doomed.signal(signal.SIGKILL)
                await doomed.wait()
                killed_at = time.monotonic()
            while True:
                response = await client.post(f"{survivor.url}/chat", json={"message": "hi"})
                if response.status_code == 200:
                    break
                assert response.status_code == 429, response.text
                assert time.monotonic() - killed_at < slot_seconds + 2, "the dead process's slot never came back"
                await asyncio.sleep(0.1)
    finally:
        doomed.stop()
        survivor.stop()
