"""A fake LLMProvider for tests that swap it in through dependency injection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from providers import AgentError, ChatEvent, ChatParams, DeltaEvent, DoneEvent


class FakeStream:
    def __init__(self, batches: Sequence[Sequence[ChatEvent]], fail_after: Exception | None = None) -> None:
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
    """Answers every request with ``batches`` (or raises ``error`` from ``open``)."""

    def __init__(
        self,
        batches: Sequence[Sequence[ChatEvent]] = (
            [DeltaEvent("Hi")],
            [DeltaEvent(" there"), DoneEvent(done=True, finish_reason="stop")],
        ),
        *,
        name: str = "local",
        error: Exception | None = None,
        fail_after: Exception | None = None,
    ) -> None:
        self._name = name
        self.batches = batches
        self.error = error
        self.fail_after = fail_after
        self.calls: list[ChatParams] = []
        self.streams: list[FakeStream] = []

    @property
    def name(self) -> str:
        return self._name

    async def open(self, params: ChatParams) -> FakeStream:
        self.calls.append(params)
        if self.error is not None:
            raise self.error
        stream = FakeStream(self.batches, self.fail_after)
        self.streams.append(stream)
        return stream


__all__ = ("AgentError", "FakeProvider", "FakeStream")
