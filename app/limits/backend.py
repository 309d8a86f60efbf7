"""What a rate-limit store does: one atomic decision per check, whoever else checks at the same moment.

Two stores implement it: :class:`~app.limits.memory.MemoryBackend` (one process) and
:class:`~app.limits.redis.RedisBackend` (every worker and replica sharing one budget). Both
count requests in a sliding window: a budget of ``n`` per window means no window-long stretch
of time ever holds more than ``n`` admitted requests; a refused request is not counted.
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple, Protocol

__all__ = ("WINDOW_SECONDS", "LimitBackend", "LimitName", "Refusal", "StoreUnavailable")

#: The window of ``requests_per_minute`` and ``auth_failures_per_minute``.
WINDOW_SECONDS: Final = 60.0


LimitName = Literal["requests", "streams", "auth_failures"]


class Refusal(NamedTuple):
    """Why a check said no, and how long until the same request would be let in."""

    limit: LimitName
    retry_after: float
    """Seconds; ``1`` for a stream slot (nobody knows when one frees up)."""


class StoreUnavailable(Exception):
    """The store did not answer (Redis down or too slow); the message names no secret."""


class LimitBackend(Protocol):
    """A store of counters; each method is one atomic operation on it.

    Raises:
        StoreUnavailable: from any method but :meth:`release`, :meth:`check` and :meth:`aclose`.
    """

    async def admit(
        self, key: str, requests: int, streams: int, token: str, failures: tuple[str, int] | None = None
    ) -> Refusal | None:
        """Count a request against ``requests`` per window and take one of ``streams`` slots, or neither.

        With ``failures`` (a key and its limit), first refuse as :meth:`failures_over` would: the
        middleware leaves that check to the admission of chats, to spare a round trip.
        """
        ...

    async def release(self, key: str, token: str) -> None:
        """Give back the slot ``admit`` took under ``token``; never raises (a lost slot expires)."""
        ...

    async def failures_over(self, key: str, limit: int) -> Refusal | None:
        """Refuse when ``key`` has ``limit`` or more failures in the window; counts nothing."""
        ...

    async def add_failure(self, key: str, limit: int, token: str) -> Refusal | None:
        """Count one failure for ``key``, unless it already has ``limit`` (then refuse and count nothing)."""
        ...

    async def check(self) -> str:
        """``ok``, ``disabled`` (nothing to check in this store) or a short reason."""
        ...

    async def aclose(self) -> None: ...
