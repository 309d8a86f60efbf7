"""No API key, password or Redis password in any log line or response (CONTRACT §3, §7), auth and limits on.

The service runs as its own process with every logger at its most verbose; clients send right,
wrong and malformed credentials of every kind; the whole captured output is searched.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from app.auth import WS_SUBPROTOCOL, key_hash, new_api_key
from tests.fake_upstream import FakeUpstream
from tests.service_process import ServiceProcess, clean_env, free_port, start_service_process

KEY = new_api_key()
WRONG_KEY = new_api_key()
PASSWORD = "basic-pass-9f8e7d6c"
WRONG_PASSWORD = "wrong-pass-1a2b3c4d"
REDIS_PASSWORD = "redis-pass-5e6f7a8b"


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        yield up


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


SECRETS = (
    KEY,
    KEY[4:20],
    WRONG_KEY,
    PASSWORD,
    WRONG_PASSWORD,
    REDIS_PASSWORD,
    basic("bob", PASSWORD).split()[1],
    basic("bob", WRONG_PASSWORD).split()[1],
)


ROUTES = (("POST", "/chat"), ("GET", "/nope"), ("GET", "/health"), ("GET", "/schema/openapi.json"))


async def exercise(url: str) -> list[str]:
    """Every kind of credential against every kind of route; the bodies and headers that came back."""
    seen: list[str] = []
    attempts = [
        {},
        {"Authorization": f"Bearer {KEY}"},
        {"X-API-Key": KEY},
        {"Authorization": f"Bearer {WRONG_KEY}"},
        {"X-API-Key": WRONG_KEY},
        {"Authorization": basic("bob", PASSWORD)},
        {"Authorization": basic("bob", WRONG_PASSWORD)},
        {"Authorization": f"Token {WRONG_KEY}"},
        {"Authorization": f"Basic {WRONG_KEY}"},
    ]
    async with httpx.AsyncClient(timeout=10) as client:
        for headers in attempts:
            for method, path in ROUTES:
                body = {"message": "hi"} if method == "POST" else None
                response = await client.request(method, url + path, headers=headers, json=body)
                seen.append(str(response.headers) + response.text)
    # /chat/ws once it exists (the handshake's subprotocols reach uvicorn's logs even for a 404 before that).
    ws_url = url.replace("http://", "ws://") + "/chat/ws"
    for protocols in ([WS_SUBPROTOCOL, f"bearer.{WRONG_KEY}"], [WS_SUBPROTOCOL, f"bearer.{KEY}"]):
        try:
            async with connect(ws_url, proxy=None, subprotocols=protocols, open_timeout=5):  # type: ignore[arg-type]
                pass
        except InvalidStatus as exc:
            seen.append(str(exc.response.headers) + exc.response.body.decode(errors="replace"))
    return seen


def assert_no_secret(output: str, seen: list[str]) -> None:
    for secret in SECRETS:
        assert secret not in output, f"{secret!r} appears in the service's log"
        for text in seen:
            assert secret not in text, f"{secret!r} appears in a response: {text[:300]}"


async def start(tmp_path: Path, name: str, upstream: FakeUpstream, **settings: str) -> ServiceProcess:
    env = clean_env(
        APP_ENV="testing",
        AGENT_LOG_LEVEL="debug",
        AGENT_PROVIDERS__LOCAL__BASE_URL=upstream.base_url,
        AGENT_AUTH__ENABLED="true",
        AGENT_AUTH__API_KEYS__ALICE=key_hash(KEY),
        AGENT_AUTH__USERNAME="bob",
        AGENT_AUTH__PASSWORD=PASSWORD,
        AGENT_RATE_LIMIT__ENABLED="true",
        AGENT_RATE_LIMIT__AUTH_FAILURES_PER_MINUTE="3",
        **settings,
    )
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "app:create_app", "--factory", "--port", str(port), "--log-level", "trace"]
    service = await start_service_process(tmp_path / f"{name}.log", env, argv=argv, port=port)
    return service


async def test_no_secret_with_limits_in_memory(upstream: FakeUpstream, tmp_path: Path) -> None:
    service = await start(tmp_path, "memory", upstream)
    try:
        seen = await exercise(service.url)
    finally:
        service.stop()
    output = service.output()
    assert "TRACE" in output or "ASGI [" in output, "uvicorn was not at its most verbose"
    assert any('"code":"rate_limited"' in text for text in seen)  # the failure limit was reached too
    assert any('"code":"unauthorized"' in text for text in seen)
    assert_no_secret(output, seen)


async def test_no_secret_when_redis_does_not_answer(upstream: FakeUpstream, tmp_path: Path) -> None:
    redis_url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
    service = await start(tmp_path, "redis-down", upstream, AGENT_RATE_LIMIT__REDIS_URL=redis_url)
    try:
        seen = await exercise(service.url)
    finally:
        service.stop()
    output = service.output()
    assert any('"code":"limits_unavailable"' in text for text in seen)
    assert_no_secret(output, seen)
