"""WebSocket handshakes under uvicorn (CONTRACT §7): the key as a subprotocol, refusals as HTTP before accept.

A tiny WebSocket route, declared the way ``/chat/ws`` declares it, is added to the real app; the
client is the ``websockets`` package over a real socket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import WebSocket, websocket
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from app.auth import WS_SUBPROTOCOL, WebSocketHandshake, accepted_subprotocol, key_hash, new_api_key
from app.config import Settings
from app.principal import principal_of
from app.sections import AuthSettings, RateLimitSettings
from providers import OpenAIConfig
from tests.integration.conftest import LiveService

ORIGIN = "http://localhost:5173"
KEY = new_api_key()


@websocket("/test/ws", middleware=[WebSocketHandshake])
async def whoami(socket: WebSocket[Any, Any, Any]) -> None:
    await socket.accept(subprotocols=accepted_subprotocol(socket.scope))
    await socket.send_json({"principal": principal_of(socket).name})
    await socket.close()


async def live(**settings: Any) -> LiveService:
    service = LiveService(Settings(providers={"local": OpenAIConfig(base_url="http://127.0.0.1:9/v1")}, **settings))
    service.app.register(whoami)
    await service.start()
    return service


@pytest.fixture
async def secured() -> AsyncIterator[LiveService]:
    service = await live(
        auth=AuthSettings(enabled=True, api_keys={"alice": key_hash(KEY)}),
        rate_limit=RateLimitSettings(enabled=True, auth_failures_per_minute=3),
    )
    yield service
    await service.stop()


@pytest.fixture
async def open_service() -> AsyncIterator[LiveService]:
    service = await live()
    yield service
    await service.stop()


def ws_url(service: LiveService) -> str:
    return f"ws://127.0.0.1:{service.port}/test/ws"


async def refused(url: str, **kwargs: Any) -> httpx.Response | Any:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, proxy=None, open_timeout=5, **kwargs):
            pass
    return info.value.response


async def test_key_as_subprotocol_is_accepted_and_agent_protocol_selected(secured: LiveService) -> None:
    async with connect(
        ws_url(secured), proxy=None, origin=ORIGIN, subprotocols=[WS_SUBPROTOCOL, f"bearer.{KEY}"]
    ) as ws:
        assert ws.subprotocol == WS_SUBPROTOCOL
        assert ws.response.headers["Sec-WebSocket-Protocol"] == WS_SUBPROTOCOL
        assert KEY not in str(ws.response.headers)
        assert await ws.recv() == '{"principal":"alice"}'


async def test_key_in_a_header_works_for_non_browser_clients(secured: LiveService) -> None:
    async with connect(ws_url(secured), proxy=None, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        assert ws.subprotocol is None
        assert await ws.recv() == '{"principal":"alice"}'


@pytest.mark.parametrize(
    "subprotocols",
    [[WS_SUBPROTOCOL], [WS_SUBPROTOCOL, "bearer.agb_wrong"], [WS_SUBPROTOCOL, "bearer."]],
    ids=["no-key", "wrong-key", "empty-key"],
)
async def test_handshake_without_a_valid_key_is_http_401(secured: LiveService, subprotocols: list[str]) -> None:
    response = await refused(ws_url(secured), origin=ORIGIN, subprotocols=subprotocols)
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert b'"code":"unauthorized"' in response.body


async def test_key_in_query_string_is_never_read(secured: LiveService) -> None:
    response = await refused(f"{ws_url(secured)}?key={KEY}", subprotocols=[WS_SUBPROTOCOL])
    assert response.status_code == 401
    response = await refused(f"{ws_url(secured)}?access_token={KEY}&api_key={KEY}&token={KEY}")
    assert response.status_code == 401


@pytest.mark.parametrize("with_key", [True, False])
async def test_foreign_origin_is_refused_with_auth(secured: LiveService, with_key: bool) -> None:
    protocols = [WS_SUBPROTOCOL, f"bearer.{KEY}"] if with_key else [WS_SUBPROTOCOL]
    response = await refused(ws_url(secured), origin="http://evil.example", subprotocols=protocols)
    assert response.status_code == 403
    assert b'"status":403' in response.body


async def test_foreign_origin_is_refused_without_auth(open_service: LiveService) -> None:
    response = await refused(ws_url(open_service), origin="http://evil.example")
    assert response.status_code == 403
    async with connect(ws_url(open_service), proxy=None, origin=ORIGIN) as ws:  # allowed origin, auth off
        assert await ws.recv() == '{"principal":"anonymous"}'
    async with connect(ws_url(open_service), proxy=None) as ws:  # no Origin: not a browser
        assert await ws.recv() == '{"principal":"anonymous"}'


async def test_failed_handshakes_count_toward_the_address_limit(secured: LiveService) -> None:
    for _ in range(3):
        assert (await refused(ws_url(secured), subprotocols=[WS_SUBPROTOCOL, "bearer.nope"])).status_code == 401
    response = await refused(ws_url(secured), subprotocols=[WS_SUBPROTOCOL, f"bearer.{KEY}"])
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
