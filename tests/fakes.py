"""A fake LLMProvider for tests that hand the app a registry of fakes instead of real providers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from providers import (
    AgentError,
    ChatEvent,
    ChatParams,
    DeltaEvent,
    DoneEvent,
    ListedModel,
    Meta,
    OpenAIConfig,
    ProviderRegistry,
)


class FakeStream:
    def __init__(self, meta: Meta, batches: Sequence[Sequence[ChatEvent]], fail_after: Exception | None = None) -> None:
        self.meta = meta
        self._batches = batches
        self._fail_after = fail_after
        self.closed = 0

    def __aiter__(self) -> AsyncIterator[Sequence[ChatEvent]]:
        return self._run()

    async def _run(self) -> AsyncIterator[Sequence[ChatEvent]]:
        for batch in self._batches:
            yield batch
        if self._fail_after is not None:
            raise self._fail_after

    async def aclose(self) -> None:
        self.closed += 1


class FakeProvider:
    """Answers every request with ``batches`` (or raises ``error`` from ``open``).

    Like a real provider it fills in its own defaults: ``model`` and ``max_tokens`` when the
    request leaves them out; ``sent`` records the model and max_tokens it answered with.
    ``list_models`` answers ``listed`` after ``list_delay`` seconds (or raises ``list_error``);
    ``listings`` counts the calls.
    """

    def __init__(
        self,
        batches: Sequence[Sequence[ChatEvent]] = (
            [DeltaEvent("Hi")],
            [DeltaEvent(" there"), DoneEvent(done=True, finish_reason="stop")],
        ),
        *,
        name: str = "local",
        model: str = "local-model",
        max_tokens: int = 512,
        error: Exception | None = None,
        fail_after: Exception | None = None,
        listed: Sequence[str | ListedModel] = (),
        list_error: Exception | None = None,
        list_delay: float = 0.0,
    ) -> None:
        self._name = name
        self.model = model
        self.max_tokens = max_tokens
        self.batches = batches
        self.error = error
        self.fail_after = fail_after
        self.listed = listed
        self.list_error = list_error
        self.list_delay = list_delay
        self.listings = 0
        self.calls: list[ChatParams] = []
        self.sent: list[tuple[str, int]] = []
        self.streams: list[FakeStream] = []

    @property
    def name(self) -> str:
        return self._name

    async def list_models(self) -> list[ListedModel]:
        self.listings += 1
        if self.list_delay:
            await asyncio.sleep(self.list_delay)
        if self.list_error is not None:
            raise self.list_error
        return [m if isinstance(m, ListedModel) else ListedModel(m) for m in self.listed]

    async def open(self, params: ChatParams) -> FakeStream:
        self.calls.append(params)
        model = params.model or self.model
        self.sent.append((model, params.max_tokens or self.max_tokens))
        if self.error is not None:
            raise self.error
        stream = FakeStream(Meta(model=model, provider=self._name), self.batches, self.fail_after)
        self.streams.append(stream)
        return stream


def registry_of(
    *providers: FakeProvider, default: str = "local", configs: dict[str, dict[str, Any]] | None = None
) -> ProviderRegistry:
    """A registry of fakes, by their names, each with a config that says its default model (and ``configs``' keys)."""
    made = {
        provider.name: OpenAIConfig(
            model=provider.model, max_tokens=provider.max_tokens, **(configs or {}).get(provider.name, {})
        )
        for provider in providers
    }
    return ProviderRegistry({provider.name: provider for provider in providers}, default, made)


__all__ = ("AgentError", "FakeProvider", "FakeStream", "registry_of")
