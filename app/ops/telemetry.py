"""What every chat tells operators: Prometheus series and one structured line when its stream ends.

A chat feature (see :mod:`app.chat.hooks`): the label children of a stream's series are looked up
once, when it starts; per upstream read (``batch``) it only counts the deltas and notes the first
one's time; everything else happens once, when the answer is released. No per-token work, no
prompt or answer text unless ``logging.log_prompts`` is on.

Series (prefix ``agent_backend_``): ``streams_open{provider}``,
``time_to_first_delta_seconds{provider}``, ``stream_duration_seconds{provider}``,
``deltas_total{provider}``, ``streams_total{provider,outcome}`` (``complete`` or the error
code, ``refused`` chats by their code too), ``cancellations_total{provider,reason}``
(``client_gone``, ``cancelled``, ``shutdown``); ``deltas_total`` is brought up to date every 32
deltas and when the answer ends. Requests by route and status come from Litestar's
Prometheus middleware (:mod:`app.ops.metrics`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Final

from prometheus_client import Counter, Gauge, Histogram

from app.chat import Chat, ChatObserver, Outcome
from app.ops.requests import current_scope, principal_name
from providers.events import ChatEvent, DeltaEvent

__all__ = ("TelemetryFeature",)

logger = logging.getLogger("app.streams")

_PREFIX: Final = "agent_backend"
_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_FLUSH_DELTAS: Final = 32
_DURATION_BUCKETS: Final = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

STREAMS_OPEN: Final = Gauge(
    f"{_PREFIX}_streams_open", "Answers streaming right now", ["provider"], multiprocess_mode="livesum"
)
TIME_TO_FIRST_DELTA: Final = Histogram(
    f"{_PREFIX}_time_to_first_delta_seconds",
    "From the chat's admission to its first delta",
    ["provider"],
    buckets=_LATENCY_BUCKETS,
)
STREAM_DURATION: Final = Histogram(
    f"{_PREFIX}_stream_duration_seconds",
    "From the chat's admission to its end",
    ["provider"],
    buckets=_DURATION_BUCKETS,
)
DELTAS: Final = Counter(f"{_PREFIX}_deltas", "Deltas relayed", ["provider"])
STREAMS: Final = Counter(f"{_PREFIX}_streams", "Chats ended, by outcome", ["provider", "outcome"])
CANCELLATIONS: Final = Counter(f"{_PREFIX}_cancellations", "Answers stopped before their end", ["provider", "reason"])


class _Series:
    """One provider's label children, looked up once per process rather than per stream."""

    __slots__ = ("deltas", "duration", "open", "ttfd")

    def __init__(self, provider: str) -> None:
        self.deltas = DELTAS.labels(provider)
        self.open = STREAMS_OPEN.labels(provider)
        self.ttfd = TIME_TO_FIRST_DELTA.labels(provider)
        self.duration = STREAM_DURATION.labels(provider)


_series: dict[str, _Series] = {}


def _series_of(provider: str) -> _Series:
    series = _series.get(provider)
    if series is None:
        series = _series[provider] = _Series(provider)
    return series


class _StreamTelemetry(ChatObserver):
    __slots__ = ("_answer", "_first_delta_at", "_log_prompts", "_provider", "_scope", "_sent", "_series", "_unflushed")

    def __init__(self, log_prompts: bool) -> None:
        self._log_prompts = log_prompts
        self._provider = ""
        self._series: _Series | None = None
        self._sent = 0
        self._unflushed = 0  # deltas counted here but not yet in the Counter
        self._first_delta_at: float | None = None
        self._answer: list[str] = []
        self._scope = current_scope.get()

    async def started(self, chat: Chat) -> None:
        meta = chat.meta
        self._provider = meta.provider if meta is not None else ""
        self._series = _series_of(self._provider)
        self._series.open.inc()

    def batch(self, events: Sequence[ChatEvent]) -> None:
        count = 0
        for event in events:
            if type(event) is DeltaEvent:
                count += 1
                if self._log_prompts:
                    self._answer.append(event.delta)
        if count:
            if self._first_delta_at is None:
                self._first_delta_at = time.monotonic()
            self._sent += count
            # prometheus-client's inc takes a lock and checks its argument (~0.7 µs): at one token
            # per read that is a share of the relay's cost, so the Counter hears every 32 deltas.
            self._unflushed += count
            if self._unflushed >= _FLUSH_DELTAS:
                self._series.deltas.inc(self._unflushed)  # type: ignore[union-attr]  # batches come after started
                self._unflushed = 0

    async def released(self, chat: Chat, outcome: Outcome) -> None:
        ended = time.monotonic()
        provider = self._provider or chat.plan.attempts[0].provider.name
        STREAMS.labels(provider, outcome.code).inc()
        series = self._series
        if series is None:
            return  # never started (refused, or the client left first): the request's own line says so
        if self._unflushed:
            series.deltas.inc(self._unflushed)
        series.open.dec()
        if outcome.interrupted:
            CANCELLATIONS.labels(provider, outcome.kind).inc()
        duration = ended - chat.admitted_at
        series.duration.observe(duration)
        ttfd = None if self._first_delta_at is None else self._first_delta_at - chat.admitted_at
        if ttfd is not None:
            series.ttfd.observe(ttfd)
        scope: dict[str, Any] = dict(self._scope or {})
        meta = chat.meta
        fields: dict[str, Any] = {
            "route": scope.get("path_template") or "<unrouted>",
            "principal": principal_name(scope) if scope else chat.principal.name,
            "provider": provider,
            "model": meta.model if meta is not None else None,
            "outcome": outcome.code,
            "finish_reason": outcome.finish_reason,
            "ttfd_ms": None if ttfd is None else round(ttfd * 1000, 2),
            "deltas": self._sent,
            "duration_ms": round(duration * 1000, 2),
        }
        if self._log_prompts:
            fields["prompt"] = [message.content for message in chat.params.messages]
            fields["answer"] = "".join(self._answer)
        logger.info("stream end", extra={"fields": fields})


class TelemetryFeature:
    """Takes part in every chat: metrics and the stream-end log line."""

    __slots__ = ("_log_prompts",)

    def __init__(self, *, log_prompts: bool) -> None:
        self._log_prompts = log_prompts

    async def admit(self, chat: Chat) -> ChatObserver:
        return _StreamTelemetry(self._log_prompts)
