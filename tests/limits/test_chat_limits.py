"""Rate limits on chats (CONTRACT §7): through the pipeline feature, so every transport gets them the same."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from app import create_app
from app.auth import key_hash, new_api_key
from app.chat import Chat, ChatObserver, ChatPipeline
from app.config import Limits, Settings
from app.errors import Conflict
from app.limits import MemoryBackend, RateLimitFeature, RateLimits
from app.principal import ANONYMOUS, Principal
from app.sections import AuthSettings, RateLimitSettings
from providers import ChatEvent, RateLimited, UpstreamUnavailable
from tests.fakes import FakeProvider, registry_of
from tests.integration.conftest import free_port

ALICE, BOB = new_api_key(), new_api_key()
ALICE_PRINCIPAL = Principal("alice", "api_key")


def limits(**settings: Any) -> RateLimits:
    return RateLimits(RateLimitSettings(enabled=True, **settings), MemoryBackend())


def pipeline(rate_limits: RateLimits, *extra: Any, provider: FakeProvider | None = None) -> ChatPipeline:
    return ChatPipeline(registry_of(provider or FakeProvider()), Limits(), [RateLimitFeature(rate_limits), *extra])


async def pump(run: Any) -> None:
    async def send(batch: Sequence[ChatEvent]) -> None:
        return None

    await run.pump(send)


async def test_a_stream_holds_its_slot_until_it_ends() -> None:
    chats = pipeline(limits(concurrent_streams=1))
    plan = await chats.plan({"message": "hi"}, ALICE_PRINCIPAL, "1.2.3.4")
    first = await chats.open(plan)
    assert first is not None
    with pytest.raises(RateLimited) as info:
        await chats.open(plan)
    assert info.value.retry_after == "1"
    # Another principal, even from the same address, has a budget of its own.
    other = await chats.open(await chats.plan({"message": "hi"}, Principal("bob", "api_key"), "1.2.3.4"))
    assert other is not None
    await pump(other)
    await pump(first)
    third = await chats.open(plan)
    assert third is not None
    await third.abandon()  # a client that left before the body: the slot comes back too
    fourth = await chats.open(plan)
    assert fourth is not None
    await pump(fourth)


async def test_the_slot_comes_back_when_the_upstream_refuses() -> None:
    chats = pipeline(limits(concurrent_streams=1), provider=FakeProvider(error=UpstreamUnavailable("down")))
    plan = await chats.plan({"message": "hi"}, ALICE_PRINCIPAL, "1.2.3.4")
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable):
            await chats.open(plan)


class Refuses:
    """A feature after the limits that refuses every chat (as history does with a 409)."""

    async def admit(self, chat: Chat) -> ChatObserver | None:
        raise Conflict("busy conversation")


async def test_the_slot_comes_back_when_a_later_feature_refuses() -> None:
    chats = pipeline(limits(concurrent_streams=1), Refuses())
    plan = await chats.plan({"message": "hi"}, ALICE_PRINCIPAL, "1.2.3.4")
    for _ in range(3):
        with pytest.raises(Conflict):
            await chats.open(plan)


async def test_auth_off_counts_per_client_address() -> None:
    chats = pipeline(limits(requests_per_minute=1))
    run = await chats.open(await chats.plan({"message": "hi"}, ANONYMOUS, "10.0.0.1"))
    assert run is not None
    await pump(run)
    with pytest.raises(RateLimited) as info:
        await chats.open(await chats.plan({"message": "hi"}, ANONYMOUS, "10.0.0.1"))
    assert "10.0.0.1" in info.value.message
    run = await chats.open(await chats.plan({"message": "hi"}, ANONYMOUS, "10.0.0.2"))
    assert run is not None
    await pump(run)


def app_with(**rate_limit: Any) -> Litestar:
    settings = Settings(
        auth=AuthSettings(enabled=True, api_keys={"alice": key_hash(ALICE), "bob": key_hash(BOB)}, public_docs=False),
        rate_limit=RateLimitSettings(enabled=True, **rate_limit),
    )
    return create_app(settings, registry=registry_of(FakeProvider()))


def test_requests_per_minute_per_principal_over_http() -> None:
    with TestClient(app_with(requests_per_minute=2)) as client:
        for _ in range(2):
            assert client.post("/chat", json={"message": "hi"}, headers={"X-API-Key": ALICE}).status_code == 200
        refused = client.post("/chat", json={"message": "hi"}, headers={"X-API-Key": ALICE})
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert client.post("/chat", json={"message": "hi"}, headers={"X-API-Key": BOB}).status_code == 200


def test_an_invalid_request_is_refused_before_it_counts() -> None:
    """A 400 never reaches the pipeline, so it takes nothing from the budget."""
    with TestClient(app_with(requests_per_minute=1)) as client:
        for _ in range(3):
            assert client.post("/chat", json={"message": ""}, headers={"X-API-Key": ALICE}).status_code == 400
        assert client.post("/chat", json={"message": "hi"}, headers={"X-API-Key": ALICE}).status_code == 200


def test_failed_authentications_block_the_address_even_with_a_right_key() -> None:
    with TestClient(app_with(auth_failures_per_minute=2)) as client:
        # Missing credentials are not failures (a page that has not asked for its key yet).
        for _ in range(3):
            assert client.post("/chat", json={"message": "hi"}).status_code == 401
        assert client.post("/chat", json={"message": "hi"}, headers={"X-API-Key": ALICE}).status_code == 200
        for _ in range(2):
            assert client.post("/chat", json={"message": "hi"}, headers={"X-API-Key": "nope"}).status_code == 401
        blocked = client.post("/chat", json={"message": "hi"}, headers={"X-API-Key": ALICE})
        assert blocked.status_code == 429
        assert blocked.json()["code"] == "rate_limited"
        assert 55 <= int(blocked.headers["retry-after"]) <= 60
        # A route that is not a chat checks in the middleware: the same answer.
        blocked = client.get("/schema/openapi.json", headers={"X-API-Key": ALICE})
        assert blocked.status_code == 429
        assert "failed authentications" in blocked.json()["detail"]
        assert client.get("/health").status_code == 200  # open routes are not blocked


def test_redis_down_is_503_limits_unavailable_never_unlimited() -> None:
    app = app_with(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(app) as client:
        response = client.post("/chat", json={"message": "hi"}, headers={"X-API-Key": ALICE})
        assert response.status_code == 503
        assert response.json()["code"] == "limits_unavailable"
        assert client.get("/health").status_code == 200
    settings = Settings(rate_limit=RateLimitSettings(enabled=True, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    with TestClient(create_app(settings, registry=registry_of(FakeProvider()))) as client:  # auth off
        response = client.post("/chat", json={"message": "hi"})
        assert response.status_code == 503
        assert response.json()["code"] == "limits_unavailable"


def test_limits_off_is_unlimited() -> None:
    with TestClient(create_app(Settings(), registry=registry_of(FakeProvider()))) as client:
        for _ in range(5):
            assert client.post("/chat", json={"message": "hi"}).status_code == 200


@pytest.mark.parametrize("trusted", [True, False])
async def test_forwarded_for_counts_only_behind_a_trusted_proxy(trusted: bool) -> None:
    """Under uvicorn (which itself trusts X-Forwarded-For from 127.0.0.1): only trusted_proxies decides."""
    import httpx

    from providers import OpenAIConfig
    from tests.fake_upstream import FakeUpstream
    from tests.integration.conftest import LiveService

    async with FakeUpstream() as upstream:
        settings = Settings(
            providers={"local": OpenAIConfig(base_url=upstream.base_url)},
            rate_limit=RateLimitSettings(
                enabled=True, requests_per_minute=1, trusted_proxies=["127.0.0.1"] if trusted else []
            ),
        )
        service = LiveService(settings)
        await service.start()
        try:
            async with httpx.AsyncClient(timeout=10) as client:

                async def chat(forwarded: str) -> int:
                    headers = {"X-Forwarded-For": forwarded}
                    response = await client.post(f"{service.url}/chat", json={"message": "hi"}, headers=headers)
                    return response.status_code

                assert await chat("1.1.1.1") == 200
                assert await chat("2.2.2.2") == (200 if trusted else 429)
                assert await chat("6.6.6.6, 1.1.1.1") == 429  # a client-written entry left of it changes nothing
        finally:
            await service.stop()
