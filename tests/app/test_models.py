"""The model catalog (CONTRACT §9): concurrent listings, each cut off, cached per provider, failures not cached."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from app.models import ListingError, ModelCatalog, ModelEntry
from providers import ListedModel, ModelNotFound, OllamaConfig, OpenAIConfig, UpstreamUnavailable
from tests.fakes import FakeProvider, registry_of


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def catalog_of(*providers: FakeProvider, ttl: float = 30.0, clock: Clock | None = None, **kwargs: Any) -> ModelCatalog:
    return ModelCatalog(registry_of(*providers, **kwargs), ttl, clock=clock or Clock())


def entry(provider: str, model: str, default: bool = False) -> ModelEntry:
    return ModelEntry(id=f"{provider}/{model}", provider=provider, model=model, default=default)


# --- the list ---------------------------------------------------------------------------------


async def test_every_providers_models_with_the_default_marked_and_config_models_added() -> None:
    local = FakeProvider(listed=["local-model", "qwen/qwen3-8b"])  # LM Studio lists its default too
    gpu = FakeProvider(name="gpu", model="llama-3.1-70b", listed=["mistral-small", "llama-3.1-70b"])
    catalog = catalog_of(gpu, local, configs={"gpu": {"models": ["extra/one", "mistral-small"]}})

    listed = await catalog.model_list()

    assert listed.data == [
        entry("local", "local-model", default=True),
        entry("local", "qwen/qwen3-8b"),
        entry("gpu", "llama-3.1-70b"),
        entry("gpu", "mistral-small"),
        entry("gpu", "extra/one"),
    ]
    assert listed.errors == []


async def test_a_provider_that_is_down_is_an_error_entry_and_keeps_its_configured_models() -> None:
    local = FakeProvider(listed=["a"])
    down = FakeProvider(
        name="down",
        model="down-default",
        list_error=UpstreamUnavailable("could not connect to provider 'down' at http://x — is the LLM server running?"),
    )
    catalog = catalog_of(local, down, configs={"down": {"models": ["pinned"]}})

    listed = await catalog.model_list()

    assert listed.data == [
        entry("local", "local-model", default=True),
        entry("local", "a"),
        entry("down", "down-default"),
        entry("down", "pinned"),
    ]
    assert listed.errors == [
        ListingError(
            provider="down",
            code="upstream_unavailable",
            message="could not connect to provider 'down' at http://x — is the LLM server running?",
        )
    ]


async def test_a_slow_provider_is_cut_off_at_its_own_limit_and_the_list_stays_fast() -> None:
    fast = FakeProvider(listed=["quick"])
    slow = FakeProvider(name="slow", listed=["late"], list_delay=30)
    # Cut-off: the smaller of timeout_seconds and connect_timeout_seconds + 5 s.
    catalog = catalog_of(fast, slow, configs={"slow": {"timeout_seconds": 0.2, "connect_timeout_seconds": 5}})

    started = time.monotonic()
    listed = await catalog.model_list()
    elapsed = time.monotonic() - started

    assert 0.15 < elapsed < 1.0
    assert [e.id for e in listed.data] == ["local/local-model", "local/quick", "slow/local-model"]
    (error,) = listed.errors
    assert (error.provider, error.code) == ("slow", "upstream_timeout")
    assert "0.2 s" in error.message


@pytest.mark.parametrize(
    ("timeout", "connect", "cutoff"), [(120, 5, 10), (120, 0.5, 5.5), (3, 5, 3), (7, 2, 7), (0.2, 5, 0.2)]
)
def test_the_cut_off_is_the_smaller_of_the_silence_limit_and_connect_plus_five(
    timeout: float, connect: float, cutoff: float
) -> None:
    config = OpenAIConfig(timeout_seconds=timeout, connect_timeout_seconds=connect)
    assert config.listing_timeout_seconds == cutoff
    assert OllamaConfig(timeout_seconds=timeout, connect_timeout_seconds=connect).listing_timeout_seconds == cutoff


async def test_providers_are_asked_concurrently() -> None:
    providers = [FakeProvider(name=f"p{i}", listed=[f"m{i}"], list_delay=0.3) for i in range(5)]
    catalog = catalog_of(*providers, default="p0")
    started = time.monotonic()
    listed = await catalog.model_list()
    assert time.monotonic() - started < 0.9
    assert listed.errors == []
    assert [p.listings for p in providers] == [1] * 5


async def test_a_bug_in_a_provider_is_an_internal_error_entry_not_a_failed_list() -> None:
    broken = FakeProvider(name="broken", list_error=RuntimeError("bug"))
    listed = await catalog_of(FakeProvider(), broken).model_list()
    (error,) = listed.errors
    assert (error.provider, error.code) == ("broken", "internal_error")


# --- the cache --------------------------------------------------------------------------------


async def test_a_success_is_cached_per_provider_until_it_expires() -> None:
    clock = Clock()
    local, other = FakeProvider(listed=["a"]), FakeProvider(name="other", listed=["b"])
    catalog = catalog_of(local, other, ttl=30, clock=clock)

    await catalog.model_list()
    clock.now += 29.9
    await catalog.model_list()
    assert (local.listings, other.listings) == (1, 1)  # cache hit

    clock.now += 0.2
    local.listed = ["a", "new"]
    listed = await catalog.model_list()
    assert (local.listings, other.listings) == (2, 2)  # expired: asked again
    assert "local/new" in [e.id for e in listed.data]


async def test_failures_are_not_cached() -> None:
    flaky = FakeProvider(list_error=UpstreamUnavailable("down"))
    catalog = catalog_of(flaky)
    assert (await catalog.model_list()).errors
    assert (await catalog.model_list()).errors
    assert flaky.listings == 2
    flaky.list_error = None
    flaky.listed = ["back"]
    listed = await catalog.model_list()
    assert listed.errors == []
    assert [e.id for e in listed.data] == ["local/local-model", "local/back"]


async def test_a_cache_of_zero_seconds_keeps_nothing() -> None:
    fake = FakeProvider(listed=["a"])
    catalog = catalog_of(fake, ttl=0)
    await catalog.model_list()
    await catalog.model_list()
    assert fake.listings == 2


async def test_callers_at_the_same_time_share_one_listing() -> None:
    fake = FakeProvider(listed=["a"], list_delay=0.1)
    catalog = catalog_of(fake, ttl=0)
    results = await asyncio.gather(*(catalog.model_list() for _ in range(10)))
    assert fake.listings == 1
    assert all(r == results[0] for r in results)


async def test_a_caller_that_leaves_does_not_cut_the_listing_short_for_the_others() -> None:
    fake = FakeProvider(listed=["a"], list_delay=0.2)
    catalog = catalog_of(fake)
    leaving = asyncio.create_task(catalog.model_list())
    staying = asyncio.create_task(catalog.model_list())
    await asyncio.sleep(0.05)
    leaving.cancel()
    listed = await staying
    assert listed.errors == []
    assert fake.listings == 1
    assert catalog.status() == {"local": "ok"}


async def test_aclose_stops_listings_under_way() -> None:
    fake = FakeProvider(list_delay=30)
    catalog = catalog_of(fake)
    waiting = asyncio.create_task(catalog.model_list())
    await asyncio.sleep(0.05)
    await asyncio.wait_for(catalog.aclose(), 1)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 1)


# --- status for /ready, without asking anyone --------------------------------------------------


async def test_status_says_unknown_then_ok_or_unreachable_from_the_last_listing() -> None:
    clock = Clock()
    up, down = FakeProvider(listed=["a"]), FakeProvider(name="down", list_error=ModelNotFound("404"))
    catalog = catalog_of(up, down, ttl=30, clock=clock)
    assert catalog.status() == {"local": "unknown", "down": "unknown"}
    assert (up.listings, down.listings) == (0, 0)  # status never asks upstream

    await catalog.model_list()
    assert catalog.status() == {"local": "ok", "down": "unreachable"}

    clock.now += 60  # an expired success still says what the last listing found
    assert catalog.status() == {"local": "ok", "down": "unreachable"}
    up.list_error = UpstreamUnavailable("gone")
    down.list_error = None
    await catalog.model_list()
    assert catalog.status() == {"local": "unreachable", "down": "ok"}


# --- what routing asks ----------------------------------------------------------------------------


async def test_offered_by_counts_listed_ids_aliases_configured_models_and_defaults() -> None:
    local = FakeProvider(listed=["shared"])
    gpu = FakeProvider(
        name="gpu", model="gpu-default", listed=["shared", ListedModel("llama3:latest", aliases=("llama3",))]
    )
    catalog = catalog_of(local, gpu, configs={"gpu": {"models": ["pinned"]}})
    assert await catalog.offered_by("shared", prefer="local") == ("local",)
    assert await catalog.offered_by("shared", prefer="gpu") == ("gpu",)
    assert await catalog.offered_by("llama3", prefer="local") == ("gpu",)
    assert await catalog.offered_by("llama3:latest", prefer="local") == ("gpu",)
    assert await catalog.offered_by("pinned", prefer="local") == ("gpu",)
    assert await catalog.offered_by("gpu-default", prefer="local") == ("gpu",)
    assert await catalog.offered_by("nobody", prefer="local") == ()


async def test_offered_by_does_not_wait_for_others_once_the_preferred_provider_has_it() -> None:
    local = FakeProvider(listed=["mine"])
    slow = FakeProvider(name="slow", list_delay=0.5)
    catalog = catalog_of(local, slow)
    started = time.monotonic()
    assert await catalog.offered_by("mine", prefer="local") == ("local",)
    assert time.monotonic() - started < 0.3
    await asyncio.sleep(0.6)  # the slow listing went on and filled the cache for the next question
    assert catalog.status()["slow"] == "ok"
