"""Rate-limit counters in this process's memory: the default when no ``rate_limit.redis_url`` is set.

The event loop runs one coroutine at a time and nothing here awaits, so each method is atomic.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from app.limits.backend import WINDOW_SECONDS, LimitName, Refusal

__all__ = ("MemoryBackend",)


class MemoryBackend:
    """Sliding-window logs and slot counts per key; keys idle for a window are swept."""

    __slots__ = ("_clock", "_failures", "_requests", "_slots", "_swept", "_window")

    def __init__(self, *, window_seconds: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window_seconds
        self._clock = clock
        self._requests: dict[str, deque[float]] = {}
        self._failures: dict[str, deque[float]] = {}
        self._slots: dict[str, int] = {}
        self._swept = clock()

    async def admit(
        self, key: str, requests: int, streams: int, token: str, failures: tuple[str, int] | None = None
    ) -> Refusal | None:
        now = self._clock()
        self._sweep(now)
        if failures is not None:
            failed = self._failures.get(failures[0])
            refusal = self._over(failed, failures[1], now, "auth_failures") if failed is not None else None
            if refusal is not None:
                return refusal
        log = self._requests.get(key)
        if log is not None:
            refusal = self._over(log, requests, now, "requests")
            if refusal is not None:
                return refusal
        if self._slots.get(key, 0) >= streams:
            return Refusal("streams", 1.0)
        if log is None:
            log = self._requests[key] = deque()
        log.append(now)
        self._slots[key] = self._slots.get(key, 0) + 1
        return None

    async def release(self, key: str, token: str) -> None:
        held = self._slots.get(key, 0) - 1
        if held > 0:
            self._slots[key] = held
        else:
            self._slots.pop(key, None)

    async def failures_over(self, key: str, limit: int) -> Refusal | None:
        log = self._failures.get(key)
        return self._over(log, limit, self._clock(), "auth_failures") if log is not None else None

    async def add_failure(self, key: str, limit: int, token: str) -> Refusal | None:
        now = self._clock()
        self._sweep(now)
        log = self._failures.get(key)
        if log is None:
            log = self._failures[key] = deque()
        refusal = self._over(log, limit, now, "auth_failures")
        if refusal is None:
            log.append(now)
        return refusal

    async def check(self) -> str:
        return "disabled"  # nothing outside the process to ask

    async def aclose(self) -> None:
        return None

    def _over(self, log: deque[float], limit: int, now: float, kind: LimitName) -> Refusal | None:
        start = now - self._window
        while log and log[0] <= start:
            log.popleft()
        if len(log) < limit:
            return None
        # The budget frees up when enough of the oldest entries have left the window.
        return Refusal(kind, log[len(log) - limit] + self._window - now)

    def _sweep(self, now: float) -> None:
        if now - self._swept < self._window:
            return
        self._swept = now
        start = now - self._window
        for logs in (self._requests, self._failures):
            for key in [key for key, log in logs.items() if not log or log[-1] <= start]:
                del logs[key]
