"""The chat pipeline's lifetime guarantees, one test per outcome: every hook once, the upstream closed once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import pytest

from app.chat import Attempt, Chat, ChatObserver, ChatPipeline, ChatPlan, ChatRun, Outcome
from app.config import Limits
from app.errors import Conflict
from app.principal import ANONYMOUS
from providers import (
    AgentError,
    ChatEvent,
    ChatParams,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    ErrorInfo,
    Meta,
    MetaEvent,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tests.fakes import FakeProvider, registry_of

DONE = DoneEvent(done=True, finish_reason="stop")


class Recorder(ChatObserver):
    """Counts each hook call and remembers the order of what happened."""

    def __init__(self, journal: list[str]) -> None:
        self.calls: Counter[str] = Counter()
        self.outcomes: list[Outcome] = []
        self.journal = journal

    async def started(self, chat: Chat) -> None:
        self.calls["started"] += 1

    def batch(self, events: Sequence[ChatEvent]) -> None:
        self.calls["batch"] += 1

    async def finishing(self, chat: Chat, outcome: Outcome) -> None:
        self.calls["finishing"] += 1
        self.outcomes.append(outcome)
        self.journal.append("finishing")

    async def released(self, chat: Chat, outcome: Outcome) -> None:
        self.calls["released"] += 1
        self.journal.append("released")


class Feature:
    def __init__(self, journal: list[str], refuse: AgentError | None = None) -> None:
        self.journal = journal
        self.refuse = refuse
        self.observers: list[Recorder] = []

    async def admit(self, chat: Chat) -> ChatObserver | None:
        if self.refuse is not None:
            raise self.refuse
        observer = Recorder(self.journal)
        self.observers.append(observer)
        return observer

    @property
    def only(self) -> Recorder:
        (observer,) = self.observers
        return observer


class GatedStream:
    """Yields one delta, then waits until released (or forever): an upstream still generating."""

    def __init__(self) -> None:
        self.meta = Meta(model="m", provider="local")
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()
        self.closed = 0

    def __aiter__(self) -> AsyncIterator[Sequence[ChatEvent]]:
        return self._run()

    async def _run(self) -> AsyncIterator[Sequence[ChatEvent]]:
        yield [DeltaEvent("so far")]
        self.waiting.set()
        await self.gate.wait()
        yield [DONE]

    async def aclose(self) -> None:
        self.closed += 1


class GatedProvider(FakeProvider):
    def __init__(self, *, slow_open: bool = False) -> None:
        super().__init__()
        self.stream = GatedStream()
        self.slow_open = slow_open
        self.opening = asyncio.Event()

    async def open(self, params: ChatParams) -> GatedStream:  # type: ignore[override]
        self.calls.append(params)
        self.opening.set()
        if self.slow_open:
            await asyncio.Event().wait()
        return self.stream


class Sink:
    def __init__(self, journal: list[str]) -> None:
        self.events: list[ChatEvent] = []
        self.journal = journal

    async def __call__(self, batch: Sequence[ChatEvent]) -> None:
        self.events.extend(batch)
        self.journal.extend("sent terminal" if isinstance(e, DoneEvent | ErrorEvent) else "sent" for e in batch)


def pipeline(*providers: FakeProvider, features: Sequence[Any] = ()) -> ChatPipeline:
    return ChatPipeline(registry_of(*providers), Limits(), features)


async def open_run(chat_pipeline: ChatPipeline, model: str | None = None, **kwargs: Any) -> ChatRun | None:
    body: dict[str, Any] = {"message": "hi"}
    if model is not None:
        body["model"] = model
    return await chat_pipeline.open(await chat_pipeline.plan(body, ANONYMOUS, "127.0.0.1"), **kwargs)


def assert_once_each(observer: Recorder, *, started: int = 1) -> None:
    assert observer.calls["started"] == started
    assert observer.calls["finishing"] == 1
    assert observer.calls["released"] == 1


# --- outcomes after the stream started ---------------------------------------------------------


async def test_complete_answer() -> None:
    journal: list[str] = []
    feature, fake = Feature(journal), FakeProvider()
    run = await open_run(pipeline(fake, features=[feature]))
    assert run is not None
    sink = Sink(journal)
    outcome = await run.pump(sink)
    assert outcome == Outcome("complete", finish_reason="stop")
    assert sink.events == [
        MetaEvent(Meta(model="local-model", provider="local")),
        DeltaEvent("Hi"),
        DeltaEvent(" there"),
        DONE,
    ]
    assert_once_each(feature.only)
    assert feature.only.calls["batch"] == 2
    assert fake.streams[0].closed == 1
    # The final write (finishing) comes before the last batch (with the terminal line) goes out.
    assert journal[-4:] == ["finishing", "sent", "sent terminal", "released"]


async def test_error_event_from_the_upstream() -> None:
    journal: list[str] = []
    failed = ErrorEvent(ErrorInfo(code="upstream_rejected", message="context too long", retryable=False))
    feature, fake = Feature(journal), FakeProvider([[DeltaEvent("a")], [failed]])
    run = await open_run(pipeline(fake, features=[feature]))
    assert run is not None
    sink = Sink(journal)
    outcome = await run.pump(sink)
    assert outcome == Outcome("error", error=failed.error)
    assert sink.events[-1] == failed
    assert_once_each(feature.only)
    assert fake.streams[0].closed == 1


@pytest.mark.parametrize(
    ("raised", "code"),
    [(UpstreamTimeout("went silent"), "upstream_timeout"), (RuntimeError("bug"), "internal_error")],
)
async def test_exception_mid_stream_becomes_one_error_event(raised: Exception, code: str) -> None:
    journal: list[str] = []
    feature, fake = Feature(journal), FakeProvider([[DeltaEvent("a")]], fail_after=raised)
    run = await open_run(pipeline(fake, features=[feature]))
    assert run is not None
    sink = Sink(journal)
    outcome = await run.pump(sink)
    assert outcome.kind == "error"
    assert outcome.code == code
    terminals = [e for e in sink.events if isinstance(e, DoneEvent | ErrorEvent)]
    assert terminals == [sink.events[-1]]
    assert_once_each(feature.only)
    assert fake.streams[0].closed == 1


async def test_stream_that_ends_without_terminal_gets_one() -> None:
    journal: list[str] = []
    feature, fake = Feature(journal), FakeProvider([[DeltaEvent("a")]])
    run = await open_run(pipeline(fake, features=[feature]))
    assert run is not None
    sink = Sink(journal)
    assert (await run.pump(sink)).code == "internal_error"
    assert isinstance(sink.events[-1], ErrorEvent)
    assert_once_each(feature.only)
    assert fake.streams[0].closed == 1


@pytest.mark.parametrize(
    ("reason", "last"),
    [
        ("cancelled", DoneEvent(done=True, finish_reason="cancelled")),
        ("shutdown", "server_shutdown"),
        ("client_gone", None),
    ],
)
async def test_stopped_mid_stream(reason: Any, last: Any) -> None:
    journal: list[str] = []
    feature, provider = Feature(journal), GatedProvider()
    run = await open_run(pipeline(provider, features=[feature]))
    assert run is not None
    sink = Sink(journal)
    pumping = asyncio.create_task(run.pump(sink))
    await provider.stream.waiting.wait()
    run.stop(reason)
    outcome = await asyncio.wait_for(pumping, 1)
    assert outcome.kind == reason
    assert outcome.interrupted
    assert sink.events[1] == DeltaEvent("so far")
    if last is None:
        assert len(sink.events) == 2  # the client is gone: nothing more is sent
    elif isinstance(last, str):
        assert isinstance(sink.events[-1], ErrorEvent)
        assert sink.events[-1].error.code == last
        assert sink.events[-1].error.retryable
    else:
        assert sink.events[-1] == last
    assert_once_each(feature.only)
    assert feature.only.outcomes == [outcome]
    assert provider.stream.closed == 1


async def test_task_cancelled_from_outside_ends_as_client_gone() -> None:
    journal: list[str] = []
    feature, provider = Feature(journal), GatedProvider()
    run = await open_run(pipeline(provider, features=[feature]))
    assert run is not None
    pumping = asyncio.create_task(run.pump(Sink(journal)))
    await provider.stream.waiting.wait()
    pumping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pumping
    assert run.outcome == Outcome("client_gone")
    assert_once_each(feature.only)
    assert provider.stream.closed == 1


async def test_run_abandoned_before_its_body_started() -> None:
    journal: list[str] = []
    feature, fake = Feature(journal), FakeProvider()
    run = await open_run(pipeline(fake, features=[feature]))
    assert run is not None
    await run.abandon()
    await run.abandon()
    assert run.outcome == Outcome("client_gone")
    assert_once_each(feature.only)
    assert fake.streams[0].closed == 1
    with pytest.raises(RuntimeError):
        await run.pump(Sink(journal))


async def test_abandon_after_pump_changes_nothing() -> None:
    journal: list[str] = []
    feature, fake = Feature(journal), FakeProvider()
    run = await open_run(pipeline(fake, features=[feature]))
    assert run is not None
    await run.pump(Sink(journal))
    await run.abandon()
    assert run.outcome is not None
    assert run.outcome.kind == "complete"
    assert_once_each(feature.only)
    assert fake.streams[0].closed == 1


# --- outcomes before the stream started -------------------------------------------------------


async def test_upstream_refusal_concludes_admitted_observers() -> None:
    journal: list[str] = []
    feature = Feature(journal)
    fake = FakeProvider(error=UpstreamRejected("context too long"))
    with pytest.raises(UpstreamRejected):
        await open_run(pipeline(fake, features=[feature]))
    assert_once_each(feature.only, started=0)
    (outcome,) = feature.only.outcomes
    assert (outcome.kind, outcome.code) == ("refused", "upstream_rejected")


async def test_a_refusing_feature_concludes_the_ones_before_it() -> None:
    journal: list[str] = []
    first, second = Feature(journal), Feature(journal, refuse=Conflict("already streaming"))
    fake = FakeProvider()
    with pytest.raises(Conflict):
        await open_run(pipeline(fake, features=[first, second]))
    assert_once_each(first.only, started=0)
    assert first.only.outcomes[0].code == "conflict"
    assert second.observers == []
    assert fake.calls == []


async def test_client_leaving_while_the_upstream_is_opening() -> None:
    journal: list[str] = []
    feature, provider = Feature(journal), GatedProvider(slow_open=True)
    gone = asyncio.Event()
    opening = asyncio.create_task(open_run(pipeline(provider, features=[feature]), until_gone=gone.wait))
    await provider.opening.wait()
    gone.set()
    assert await asyncio.wait_for(opening, 1) is None
    assert_once_each(feature.only, started=0)
    assert feature.only.outcomes == [Outcome("client_gone")]


async def test_live_runs_are_tracked_and_stopped_at_shutdown() -> None:
    provider = GatedProvider()
    chat_pipeline = pipeline(provider)
    run = await open_run(chat_pipeline)
    assert run is not None
    assert chat_pipeline.live == 1
    sink = Sink([])
    pumping = asyncio.create_task(run.pump(sink))
    await provider.stream.waiting.wait()
    chat_pipeline.stop_all("shutdown")
    assert (await asyncio.wait_for(pumping, 1)).kind == "shutdown"
    assert chat_pipeline.live == 0


# --- fallback, before the stream only --------------------------------------------------------


def with_fallback(plan: ChatPlan, attempt: Attempt) -> ChatPlan:
    return ChatPlan(plan.request, plan.params, (*plan.attempts, attempt), plan.principal, plan.client)


@pytest.mark.parametrize("error", [UpstreamUnavailable("refused"), UpstreamTimeout("no connect")])
async def test_fallback_is_tried_when_the_first_provider_cannot_start(error: AgentError) -> None:
    first = FakeProvider(error=error)
    second = FakeProvider(name="other", model="other-default")
    chat_pipeline = pipeline(first, second)
    plan = with_fallback(await chat_pipeline.plan({"message": "hi"}, ANONYMOUS, "127.0.0.1"), Attempt(second, None))
    run = await chat_pipeline.open(plan)
    assert run is not None
    assert run.chat.meta == Meta(model="other-default", provider="other")
    assert len(first.calls) == len(second.calls) == 1
    await run.abandon()


async def test_no_fallback_on_a_4xx() -> None:
    first = FakeProvider(error=UpstreamRejected("bad request"))
    second = FakeProvider(name="other")
    chat_pipeline = pipeline(first, second)
    plan = with_fallback(await chat_pipeline.plan({"message": "hi"}, ANONYMOUS, "127.0.0.1"), Attempt(second, None))
    with pytest.raises(UpstreamRejected):
        await chat_pipeline.open(plan)
    assert second.calls == []


async def test_observer_failures_never_cut_the_stream() -> None:
    class Broken(ChatObserver):
        async def started(self, chat: Chat) -> None:
            raise RuntimeError("started")

        async def finishing(self, chat: Chat, outcome: Outcome) -> None:
            raise RuntimeError("finishing")

        async def released(self, chat: Chat, outcome: Outcome) -> None:
            raise RuntimeError("released")

    class BrokenFeature:
        async def admit(self, chat: Chat) -> ChatObserver:
            return Broken()

    fake = FakeProvider()
    run = await open_run(pipeline(fake, features=[BrokenFeature()]))
    assert run is not None
    sink = Sink([])
    with anyio.fail_after(1):
        assert (await run.pump(sink)).kind == "complete"
    assert sink.events[-1] == DONE
    assert fake.streams[0].closed == 1


# --- fallback from the configuration (CONTRACT §9) ---------------------------------------------


def configured_pipeline(*providers: FakeProvider, **fallbacks: list[str]) -> ChatPipeline:
    configs = {name: {"fallback": entries} for name, entries in fallbacks.items()}
    return ChatPipeline(registry_of(*providers, configs=configs), Limits())


@pytest.mark.parametrize("error", [UpstreamUnavailable("refused"), UpstreamTimeout("no connect")])
async def test_a_configured_fallback_answers_with_its_own_default_model(error: AgentError) -> None:
    first = FakeProvider(error=error)
    backup = FakeProvider(name="backup", model="backup-default", max_tokens=64)
    run = await open_run(configured_pipeline(first, backup, local=["backup"]), model="local/big-model")
    assert run is not None
    assert run.chat.meta == Meta(model="backup-default", provider="backup")
    assert first.sent == [("big-model", 512)]
    assert backup.sent == [("backup-default", 64)]
    sink = Sink([])
    await run.pump(sink)
    assert sink.events[0] == MetaEvent(Meta(model="backup-default", provider="backup"))


async def test_every_fallback_failing_reports_the_last_failure() -> None:
    first = FakeProvider(error=UpstreamUnavailable("first down"))
    second = FakeProvider(name="second", error=UpstreamTimeout("second slow"))
    third = FakeProvider(name="third", error=UpstreamUnavailable("third down"))
    chat_pipeline = configured_pipeline(first, second, third, local=["second", "third/named"])
    with pytest.raises(UpstreamUnavailable, match="third down"):
        await open_run(chat_pipeline)
    assert (len(first.calls), len(second.calls), len(third.calls)) == (1, 1, 1)
    assert third.sent == [("named", 512)]


async def test_no_fallback_once_the_stream_started() -> None:
    first = FakeProvider([[DeltaEvent("partial")]], fail_after=UpstreamUnavailable("dropped mid-answer"))
    backup = FakeProvider(name="backup")
    run = await open_run(configured_pipeline(first, backup, local=["backup"]))
    assert run is not None
    sink = Sink([])
    outcome = await run.pump(sink)
    assert outcome.code == "upstream_unavailable"
    assert sink.events[1] == DeltaEvent("partial")
    assert isinstance(sink.events[-1], ErrorEvent)
    assert backup.calls == []


async def test_no_configured_fallback_on_a_4xx() -> None:
    first = FakeProvider(error=UpstreamRejected("context too long"))
    backup = FakeProvider(name="backup")
    with pytest.raises(UpstreamRejected):
        await open_run(configured_pipeline(first, backup, local=["backup"]))
    assert backup.calls == []
