"""The configured budgets (CONTRACT §7) over one store, with refusals as the contract's errors."""

from __future__ import annotations

import math
import secrets
from collections.abc import Awaitable
from typing import TypeVar

from app.errors import LimitsUnavailable
from app.limits.backend import LimitBackend, Refusal, StoreUnavailable
from app.limits.memory import MemoryBackend
from app.limits.redis import RedisBackend
from app.sections import RateLimitSettings
from providers.errors import RateLimited

__all__ = ("RateLimits", "backend_for")

_T = TypeVar("_T")


def backend_for(settings: RateLimitSettings) -> LimitBackend:
    """Redis when ``rate_limit.redis_url`` is set, else this process's memory. No I/O."""
    if settings.redis_url:
        return RedisBackend(settings.redis_url, prefix=settings.key_prefix, slot_seconds=settings.stream_slot_seconds)
    return MemoryBackend()


class RateLimits:
    """Requests per minute and open streams per caller, failed authentications per client address.

    Every method that decides raises :class:`~providers.errors.RateLimited` (429, with
    ``Retry-After``) over a limit and :class:`~app.errors.LimitsUnavailable` (503) when the store
    does not answer: a request is never let through unlimited.
    """

    __slots__ = ("_backend", "_settings")

    def __init__(self, settings: RateLimitSettings, backend: LimitBackend | None = None) -> None:
        self._settings = settings
        self._backend = backend if backend is not None else backend_for(settings)

    async def admit(self, key: str, who: str, *, address: str | None = None) -> str:
        """Count one chat for ``key`` and take one of its stream slots; the token to :meth:`release` it with.

        Args:
            key: what the budget belongs to (``p:<principal>`` or ``ip:<address>``).
            who: how a message names it.
            address: the client's address, to refuse it here, in the same step, when it failed to
                authenticate too often (what :meth:`refuse_if_blocked` checks).

        Raises:
            RateLimited: over ``requests_per_minute``, ``concurrent_streams`` or, with ``address``,
                ``auth_failures_per_minute``; nothing was counted.
            LimitsUnavailable: the store did not answer.
        """
        token = secrets.token_hex(8)
        settings = self._settings
        failures = ("ip:" + address, settings.auth_failures_per_minute) if address is not None else None
        refusal = await self._ask(
            self._backend.admit(key, settings.requests_per_minute, settings.concurrent_streams, token, failures)
        )
        if refusal is not None:
            named = address if refusal.limit == "auth_failures" and address is not None else who
            raise _rate_limited(refusal, named, settings)
        return token

    async def release(self, key: str, token: str) -> None:
        """Give back the slot :meth:`admit` took; never raises."""
        await self._backend.release(key, token)

    async def refuse_if_blocked(self, address: str) -> None:
        """Refuse a client address that failed to authenticate too often in the last minute.

        Raises:
            RateLimited: over ``auth_failures_per_minute``, whatever credentials this request has.
            LimitsUnavailable: the store did not answer.
        """
        refusal = await self._ask(self._backend.failures_over("ip:" + address, self._settings.auth_failures_per_minute))
        if refusal is not None:
            raise _rate_limited(refusal, address, self._settings)

    async def count_auth_failure(self, address: str) -> None:
        """Count one failed authentication from ``address``, or refuse it when the address is over its limit.

        Raises:
            RateLimited: ``address`` failed ``auth_failures_per_minute`` times already (this one is not counted).
            LimitsUnavailable: the store did not answer.
        """
        limit = self._settings.auth_failures_per_minute
        refusal = await self._ask(self._backend.add_failure("ip:" + address, limit, secrets.token_hex(8)))
        if refusal is not None:
            raise _rate_limited(refusal, address, self._settings)

    async def check(self) -> str:
        """For ``/ready``: ``ok`` (Redis answers ``PING``), ``disabled`` (counters in memory) or a short reason."""
        return await self._backend.check()

    async def aclose(self) -> None:
        await self._backend.aclose()

    @staticmethod
    async def _ask(question: Awaitable[_T]) -> _T:
        try:
            return await question
        except StoreUnavailable as exc:
            raise LimitsUnavailable(f"rate limits are kept in Redis, which does not answer: {exc}; try again") from None


def _rate_limited(refusal: Refusal, who: str, settings: RateLimitSettings) -> RateLimited:
    seconds = max(1, math.ceil(refusal.retry_after))
    if refusal.limit == "streams":
        return RateLimited(
            f"too many open streams for {who}: {settings.concurrent_streams} at once; retry when one ends",
            retry_after="1",
        )
    if refusal.limit == "requests":
        message = f"too many requests for {who}: {settings.requests_per_minute} per minute; retry in {seconds} s"
    else:
        message = (
            f"too many failed authentications from {who}: {settings.auth_failures_per_minute} per minute;"
            f" retry in {seconds} s"
        )
    return RateLimited(message, retry_after=str(seconds))
