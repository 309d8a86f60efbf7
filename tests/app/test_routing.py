"""Routing a request's ``model`` (CONTRACT §3, §9): every rule, and the fallbacks after the first provider."""

from __future__ import annotations

import time
from typing import Any

import pytest

from app.chat import Attempt, route
from app.errors import InvalidRequest
from app.models import ModelCatalog
from providers import ListedModel, UpstreamUnavailable
from tests.fakes import FakeProvider, registry_of


def setup(*providers: FakeProvider, **kwargs: Any) -> tuple[Any, ModelCatalog]:
    registry = registry_of(*providers, **kwargs)
    return registry, ModelCatalog(registry)


def names(attempts: tuple[Attempt, ...]) -> list[tuple[str, str | None]]:
    return [(a.provider.name, a.model) for a in attempts]


@pytest.fixture
def three() -> tuple[FakeProvider, FakeProvider, FakeProvider]:
    return (
        FakeProvider(listed=["local-model", "qwen/qwen3-8b", "shared-all"]),
        FakeProvider(name="gpu", model="gpu-default", listed=["TheBloke/MyLocalModel", "shared-two", "shared-all"]),
        FakeProvider(
            name="laptop",
            model="llama3.2",
            listed=[ListedModel("llama3.2:latest", aliases=("llama3.2",)), "shared-two", "shared-all"],
        ),
    )


async def test_no_model_is_the_default_providers_default(three: Any) -> None:
    registry, catalog = setup(*three)
    assert names(await route(None, registry, catalog)) == [("local", None)]
    assert [p.listings for p in three] == [0, 0, 0]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpu/x", ("gpu", "x")),
        ("GPU/TheBloke/MyLocalModel", ("gpu", "TheBloke/MyLocalModel")),
        ("local/qwen/qwen3-8b", ("local", "qwen/qwen3-8b")),
        ("laptop/anything", ("laptop", "anything")),
    ],
)
async def test_provider_slash_model_names_that_provider_without_asking_for_lists(
    three: Any, model: str, expected: tuple[str, str]
) -> None:
    registry, catalog = setup(*three)
    assert names(await route(model, registry, catalog)) == [expected]
    assert [p.listings for p in three] == [0, 0, 0]


@pytest.mark.parametrize("model", ["gpu/", "LOCAL/"])
async def test_provider_slash_nothing_is_invalid(three: Any, model: str) -> None:
    registry, catalog = setup(*three)
    with pytest.raises(InvalidRequest, match="no model"):
        await route(model, registry, catalog)


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("TheBloke/MyLocalModel", "gpu"),  # listed by exactly one, a non-default: there (its slash names no provider)
        ("llama3.2:latest", "laptop"),
        ("llama3.2", "laptop"),  # Ollama's id without its ":latest" tag, and laptop's default model
        ("gpu-default", "gpu"),  # a provider's configured default model is always on its list
        ("qwen/qwen3-8b", "local"),
        ("shared-all", "local"),  # listed by several, the default among them: the default
        ("unknown-model", "local"),  # listed by none: the default, as it is
        ("nobody/has/this", "local"),
    ],
)
async def test_bare_ids_go_where_the_model_lists_say(three: Any, model: str, provider: str) -> None:
    registry, catalog = setup(*three)
    assert names(await route(model, registry, catalog)) == [(provider, model)]


async def test_a_bare_id_listed_by_several_without_the_default_is_invalid_naming_the_candidates(three: Any) -> None:
    registry, catalog = setup(*three)
    with pytest.raises(InvalidRequest) as caught:
        await route("shared-two", registry, catalog)
    message = caught.value.message
    assert "gpu, laptop" in message
    assert '"gpu/shared-two"' in message
    assert '"laptop/shared-two"' in message
    assert caught.value.status == 400


async def test_configured_models_route_like_listed_ones_even_while_the_server_is_down() -> None:
    local = FakeProvider(listed=["a"])
    gpu = FakeProvider(name="gpu", list_error=UpstreamUnavailable("down"))
    registry, catalog = setup(local, gpu, configs={"gpu": {"models": ["big/model"]}})
    assert names(await route("big/model", registry, catalog)) == [("gpu", "big/model")]


async def test_a_single_provider_needs_no_list() -> None:
    fake = FakeProvider()
    registry, catalog = setup(fake)
    assert names(await route("anything/at-all", registry, catalog)) == [("local", "anything/at-all")]
    assert fake.listings == 0


async def test_with_an_empty_cache_routing_waits_no_longer_than_the_cut_off() -> None:
    local = FakeProvider()
    slow = FakeProvider(name="slow", listed=["m"], list_delay=30)
    registry, catalog = setup(local, slow, configs={"slow": {"timeout_seconds": 0.3}})
    started = time.monotonic()
    assert names(await route("m", registry, catalog)) == [("local", "m")]  # slow could not say in time
    assert 0.25 < time.monotonic() - started < 1.5


async def test_the_lists_are_asked_once_and_then_cached() -> None:
    local, gpu = FakeProvider(listed=["a"]), FakeProvider(name="gpu", listed=["b"])
    registry, catalog = setup(local, gpu)
    for _ in range(3):
        assert names(await route("b", registry, catalog)) == [("gpu", "b")]
    assert (local.listings, gpu.listings) == (1, 1)


async def test_routing_without_a_catalog_sends_bare_ids_to_the_default() -> None:
    registry, _ = setup(FakeProvider(), FakeProvider(name="gpu", listed=["b"]))
    assert names(await route("b", registry)) == [("local", "b")]


# --- fallbacks -----------------------------------------------------------------------------------


def fallback_setup(**fallbacks: list[str]) -> tuple[Any, ModelCatalog]:
    providers = [
        FakeProvider(),
        FakeProvider(name="gpu", model="gpu-default"),
        FakeProvider(name="laptop", model="llama3.2"),
    ]
    return setup(*providers, configs={name: {"fallback": entries} for name, entries in fallbacks.items()})


async def test_fallbacks_follow_in_order_each_with_its_own_default_unless_one_is_named() -> None:
    registry, catalog = fallback_setup(local=["gpu", "laptop/qwen3:8b", "LAPTOP"])
    assert names(await route(None, registry, catalog)) == [
        ("local", None),
        ("gpu", None),
        ("laptop", "qwen3:8b"),
        ("laptop", None),
    ]


async def test_an_explicit_provider_and_model_gets_its_providers_fallbacks_with_their_own_defaults() -> None:
    registry, catalog = fallback_setup(gpu=["laptop"])
    assert names(await route("gpu/big-model", registry, catalog)) == [("gpu", "big-model"), ("laptop", None)]


async def test_each_fallback_once_and_the_fallbacks_own_lists_are_not_followed() -> None:
    registry, catalog = fallback_setup(local=["gpu", "gpu", "gpu/gpu-default", "local", "laptop"], gpu=["laptop"])
    # "gpu/gpu-default" is "gpu" again; "local" is the first attempt itself; gpu's own list is not read.
    assert names(await route(None, registry, catalog)) == [("local", None), ("gpu", None), ("laptop", None)]


async def test_only_the_first_providers_list_counts() -> None:
    registry, catalog = fallback_setup(gpu=["laptop"])
    assert names(await route("local/x", registry, catalog)) == [("local", "x")]


async def test_the_same_provider_with_another_model_is_a_fallback_of_its_own() -> None:
    registry, catalog = fallback_setup(local=["local/small-model"])
    assert names(await route("local/big-model", registry, catalog)) == [
        ("local", "big-model"),
        ("local", "small-model"),
    ]
