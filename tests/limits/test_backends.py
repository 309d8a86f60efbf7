"""Both rate-limit stores against one contract: hit, refuse without counting, reset; Redis's own guarantees.

The memory store runs on this process's clock, the Redis store on the real Redis of this
machine (see ``conftest.py``); windows are shortened to a second so a reset is seen quickly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.errors import LimitsUnavailable
from app.limits import LimitBackend, MemoryBackend, RateLimits, RedisBackend, Refusal, StoreUnavailable
from app.sections import RateLimitSettings
from providers.errors import RateLimited
from tests.integration.conftest import free_port

WINDOW = 1.0

Make = Callable[..., LimitBackend]


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    made: list[LimitBackend] = []
    if request.param == "memory":
        shared = MemoryBackend(window_seconds=WINDOW)

        def make_memory(**_: Any) -> LimitBackend:
            return shared  # one process: every "instance" is the same counters

        yield make_memory
        return
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("prefix")

    def make_redis(slot_seconds: float = 5.0) -> LimitBackend:
        backend = RedisBackend(url, prefix=prefix, slot_seconds=slot_seconds, window_seconds=WINDOW)
        made.append(backend)
        return backend

    yield make_redis
    for backend in made:
        await backend.aclose()


async def test_requests_are_counted_refused_and_reset(make: Make) -> None:
    backend = make()
    for number in range(3):
        assert await backend.admit("p:alice", 3, 100, f"t{number}") is None, number
    refusal = await backend.admit("p:alice", 3, 100, "t3")
    assert refusal is not None and refusal.limit == "requests"
    assert 0 < refusal.retry_after <= WINDOW
    assert await backend.admit("p:bob", 3, 100, "b0") is None  # budgets are per key
    await asyncio.sleep(refusal.retry_after + 0.05)
    assert await backend.admit("p:alice", 3, 100, "t4") is None  # the window passed


async def test_a_refused_request_does_not_count(make: Make) -> None:
    backend = make()
    assert await backend.admit("k", 1, 100, "a") is None
    for number in range(5):
        assert await backend.admit("k", 1, 100, f"refused{number}") is not None
    await asyncio.sleep(WINDOW + 0.05)
    # Had the refusals counted, the window would still be full.
    assert await backend.admit("k", 1, 100, "b") is None


async def test_stream_slots_are_taken_and_given_back(make: Make) -> None:
    backend = make()
    assert await backend.admit("k", 100, 2, "s1") is None
    assert await backend.admit("k", 100, 2, "s2") is None
    assert await backend.admit("k", 100, 2, "s3") == Refusal("streams", 1.0)
    await backend.release("k", "s1")
    assert await backend.admit("k", 100, 2, "s4") is None
    assert await backend.admit("k", 100, 2, "s5") == Refusal("streams", 1.0)


async def test_a_slot_refusal_does_not_count_the_request(make: Make) -> None:
    backend = make()
    assert await backend.admit("k", 2, 1, "s1") is None
    assert (await backend.admit("k", 2, 1, "s2")) == Refusal("streams", 1.0)
    await backend.release("k", "s1")
    assert await backend.admit("k", 2, 1, "s3") is None  # the second of two, not the third


async def test_auth_failures_block_and_reset(make: Make) -> None:
    backend = make()
    assert await backend.failures_over("ip:1.2.3.4", 2) is None
    assert await backend.add_failure("ip:1.2.3.4", 2, "f1") is None
    assert await backend.failures_over("ip:1.2.3.4", 2) is None
    assert await backend.add_failure("ip:1.2.3.4", 2, "f2") is None
    refusal = await backend.failures_over("ip:1.2.3.4", 2)
    assert refusal is not None and refusal.limit == "auth_failures" and 0 < refusal.retry_after <= WINDOW
    assert await backend.failures_over("ip:5.6.7.8", 2) is None
    await asyncio.sleep(refusal.retry_after + 0.05)
    assert await backend.failures_over("ip:1.2.3.4", 2) is None


async def test_a_failure_over_the_limit_is_refused_and_not_counted(make: Make) -> None:
    backend = make()
    assert await backend.add_failure("ip:a", 1, "f1") is None
    for number in range(3):
        refusal = await backend.add_failure("ip:a", 1, f"over{number}")
        assert refusal is not None and refusal.limit == "auth_failures"
    await asyncio.sleep(WINDOW + 0.05)
    assert await backend.failures_over("ip:a", 1) is None  # the refused ones never counted


async def test_admission_refuses_a_blocked_address_in_the_same_step(make: Make) -> None:
    backend = make()
    assert await backend.admit("p:alice", 10, 10, "ok", failures=("ip:a", 2)) is None
    await backend.add_failure("ip:a", 2, "f1")
    await backend.add_failure("ip:a", 2, "f2")
    refusal = await backend.admit("p:alice", 1, 1, "blocked", failures=("ip:a", 2))
    assert refusal is not None and refusal.limit == "auth_failures" and 0 < refusal.retry_after <= WINDOW
    assert await backend.admit("p:alice", 10, 10, "elsewhere", failures=("ip:b", 2)) is None
    assert await backend.admit("p:bob", 1, 1, "no-address") is None
    await asyncio.sleep(WINDOW + 0.05)
    # Nothing of the refused admission was counted: a budget of one request and one stream is free.
    await backend.release("p:alice", "ok")
    await backend.release("p:alice", "elsewhere")
    assert await backend.admit("p:alice", 1, 1, "after", failures=("ip:a", 2)) is None


async def test_concurrent_admissions_never_exceed_the_budget(make: Make) -> None:
    first, second = make(), make()
    results = await asyncio.gather(
        *(backend.admit("k", 10, 1000, f"c{n}-{i}") for n in range(40) for i, backend in enumerate((first, second)))
    )
    assert sum(result is None for result in results) == 10


# --------------------------------------------------------------------------- Redis only


async def test_a_dead_processs_slot_comes_back(redis_url: str, prefix: str) -> None:
    dead = RedisBackend(redis_url, prefix=prefix, slot_seconds=1.0)
    alive = RedisBackend(redis_url, prefix=prefix, slot_seconds=1.0)
    try:
        assert await dead.admit("k", 100, 1, "held") is None
        await dead.aclose()  # stops renewing, never releases: what a killed process leaves behind
        assert await alive.admit("k", 100, 1, "next") == Refusal("streams", 1.0)
        started = time.monotonic()
        while await alive.admit("k", 100, 1, "next") is not None:
            assert time.monotonic() - started < 3, "the dead slot did not expire"
            await asyncio.sleep(0.1)
    finally:
        await alive.aclose()


async def test_a_live_slot_is_renewed_past_its_expiry(redis_url: str, prefix: str) -> None:
    holder = RedisBackend(redis_url, prefix=prefix, slot_seconds=1.0)
    other = RedisBackend(redis_url, prefix=prefix, slot_seconds=1.0)
    try:
        assert await holder.admit("k", 100, 1, "long-stream") is None
        await asyncio.sleep(2.5)  # 2.5 slot lifetimes: renewed every third of one
        assert await other.admit("k", 100, 1, "x") == Refusal("streams", 1.0)
        await holder.release("k", "long-stream")
        assert await other.admit("k", 100, 1, "y") is None
    finally:
        await holder.aclose()
        await other.aclose()


async def test_keys_live_under_the_prefix_and_expire(redis_url: str, prefix: str) -> None:
    backend = RedisBackend(redis_url, prefix=prefix, slot_seconds=2.0, window_seconds=WINDOW)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await backend.admit("p:alice", 5, 5, "t")
        await backend.add_failure("ip:1.2.3.4", 5, "f")
        keys = sorted([key.decode() async for key in client.scan_iter(match=prefix + "*")])
        assert keys == [
            f"{prefix}{{ip:1.2.3.4}}:auth_failures",
            f"{prefix}{{p:alice}}:requests",
            f"{prefix}{{p:alice}}:streams",
        ]
        for key in keys:
            assert 0 < await client.pttl(key) <= 2000  # nothing stays forever
    finally:
        await backend.aclose()
        await client.aclose()


async def test_redis_down_is_limits_unavailable_never_unlimited() -> None:
    backend = RedisBackend(f"redis://:pw-in-url@127.0.0.1:{free_port()}/0", prefix="x:", slot_seconds=5)
    limits = RateLimits(RateLimitSettings(enabled=True), backend)
    try:
        with pytest.raises(StoreUnavailable):
            await backend.admit("k", 10, 10, "t")
        for attempt in (limits.admit("p:alice", "'alice'"), limits.refuse_if_blocked("1.2.3.4")):
            with pytest.raises(LimitsUnavailable) as info:
                await attempt
            assert info.value.status == 503 and info.value.retryable
            assert "pw-in-url" not in info.value.message
        with pytest.raises(LimitsUnavailable):
            await limits.count_auth_failure("1.2.3.4")
        await limits.release("p:alice", "never-taken")  # never raises
        assert await limits.check() == "unreachable"
    finally:
        await limits.aclose()


async def test_check_reports_for_ready(redis_url: str, prefix: str) -> None:
    limits = RateLimits(RateLimitSettings(enabled=True, redis_url=redis_url, key_prefix=prefix))
    try:
        assert await limits.check() == "ok"
    finally:
        await limits.aclose()
    assert await RateLimits(RateLimitSettings(enabled=True)).check() == "disabled"


async def test_over_a_limit_is_rate_limited_with_retry_after() -> None:
    limits = RateLimits(
        RateLimitSettings(enabled=True, requests_per_minute=2, concurrent_streams=1, auth_failures_per_minute=1)
    )
    token = await limits.admit("p:alice", "'alice'")
    with pytest.raises(RateLimited) as info:
        await limits.admit("p:alice", "'alice'")
    assert info.value.retry_after == "1"  # the slot: a stream may end any moment
    await limits.release("p:alice", token)
    await limits.release("p:alice", await limits.admit("p:alice", "'alice'"))
    with pytest.raises(RateLimited) as info:
        await limits.admit("p:alice", "'alice'")
    assert info.value.retry_after is not None and 58 <= int(info.value.retry_after) <= 60
    assert "2 per minute" in info.value.message
    await limits.count_auth_failure("9.9.9.9")
    with pytest.raises(RateLimited) as info:
        await limits.refuse_if_blocked("9.9.9.9")
    assert info.value.retry_after is not None and int(info.value.retry_after) >= 59
