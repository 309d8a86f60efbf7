"""Rate-limit counters in Redis, shared by every worker and replica: one Lua script per decision.

Keys (all under ``rate_limit.key_prefix``, the counted key in braces so a key's two sets share a
cluster slot): ``<prefix>{<key>}:requests`` — a sorted set of admitted requests scored by their
time; ``<prefix>{<key>}:streams`` — the stream slots held, scored by when each expires;
``<prefix>{<key>}:auth_failures``. Times are Redis's own clock (``TIME``), so processes on
machines whose clocks differ still agree.

A slot expires ``stream_slot_seconds`` after it was taken or last renewed; this process renews
all of its slots in one script every third of that, so a slot held by a process that died comes
back on its own. Redis that does not answer is :class:`~app.limits.backend.StoreUnavailable`,
never an unlimited request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.limits.backend import WINDOW_SECONDS, Refusal, StoreUnavailable

__all__ = ("RedisBackend",)

logger = logging.getLogger("app.limits")

_TIMEOUT_SECONDS: Final = 1.0

_NOW: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# The n-th oldest entry still in the window decides when the budget frees up (n = count - limit).
_OVER: Final = """
local function over(key, limit, window, now)
  local start = string.format('(%d', now - window)
  local count = redis.call('ZCOUNT', key, start, '+inf')
  if count < limit then return nil end
  local nth = redis.call('ZRANGEBYSCORE', key, start, '+inf', 'WITHSCORES', 'LIMIT', count - limit, 1)
  return tonumber(nth[2]) + window - now
end
"""

#: KEYS: requests, streams[, auth failures]. ARGV: requests limit, window ms, streams limit, slot ms,
#: token[, failures limit]. Returns {0} (admitted), {1, retry ms} (requests), {2} (streams),
#: {3, retry ms} (auth failures).
_ADMIT: Final = (
    _NOW
    + _OVER
    + """
local window = tonumber(ARGV[2])
if KEYS[3] then
  local blocked = over(KEYS[3], tonumber(ARGV[6]), window, now)
  if blocked then return {3, blocked} end
end
local wait = over(KEYS[1], tonumber(ARGV[1]), window, now)
if wait then return {1, wait} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return {2} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[5])
redis.call('PEXPIRE', KEYS[1], window)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[5])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]))
return {0}
"""
)

#: KEYS: failures. ARGV: limit, window ms. Returns 0 or the retry ms. Writes nothing.
_FAILURES_OVER: Final = (
    _NOW
    + _OVER
    + """
local wait = over(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now)
if wait then return wait end
return 0
"""
)

#: KEYS: failures. ARGV: limit, window ms, token. Returns 0 (counted) or the retry ms (refused, not counted).
_ADD_FAILURE: Final = (
    _NOW
    + _OVER
    + """
local window = tonumber(ARGV[2])
local wait = over(KEYS[1], tonumber(ARGV[1]), window, now)
if wait then return wait end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""
)

#: KEYS: the streams sets of the held slots. ARGV: slot ms, then one token per key.
_RENEW: Final = (
    _NOW
    + """
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + ttl, ARGV[i + 1])
  redis.call('PEXPIRE', key, ttl)
end
return 0
"""
)


class RedisBackend:
    """The counters of :mod:`app.limits.backend` in one Redis; ``url`` may carry a password."""

    __slots__ = (
        "_add_failure",
        "_admit",
        "_client",
        "_failures_over",
        "_held",
        "_prefix",
        "_renew",
        "_renewer",
        "_slot_ms",
        "_where",
        "_window_ms",
    )

    def __init__(self, url: str, *, prefix: str, slot_seconds: float, window_seconds: float = WINDOW_SECONDS) -> None:
        # No I/O here: connections are made on first use, on the loop that uses them.
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=_TIMEOUT_SECONDS,
            socket_timeout=_TIMEOUT_SECONDS,
            # One quick retry replaces a pooled connection that a Redis restart broke; no backoff,
            # so Redis down costs a request milliseconds, not seconds.
            retry=Retry(NoBackoff(), 1),
        )
        pool_kwargs = self._client.connection_pool.connection_kwargs
        self._where = f"{pool_kwargs.get('host', pool_kwargs.get('path', 'redis'))}:{pool_kwargs.get('port', '')}"
        self._prefix = prefix
        self._slot_ms = max(1, round(slot_seconds * 1000))
        self._window_ms = max(1, round(window_seconds * 1000))
        self._admit = self._client.register_script(_ADMIT)
        self._failures_over = self._client.register_script(_FAILURES_OVER)
        self._add_failure = self._client.register_script(_ADD_FAILURE)
        self._renew = self._client.register_script(_RENEW)
        self._held: dict[str, str] = {}
        """token -> the streams key of a slot this process holds (renewed until released)."""
        self._renewer: asyncio.Task[None] | None = None

    async def admit(
        self, key: str, requests: int, streams: int, token: str, failures: tuple[str, int] | None = None
    ) -> Refusal | None:
        base = f"{self._prefix}{{{key}}}"
        streams_key = base + ":streams"
        keys = [base + ":requests", streams_key]
        args: list[int | str] = [requests, self._window_ms, streams, self._slot_ms, token]
        if failures is not None:
            keys.append(self._failures_key(failures[0]))
            args.append(failures[1])
        result = await self._call(self._admit, keys, args)
        if result[0] == 1:
            return Refusal("requests", int(result[1]) / 1000)
        if result[0] == 2:
            return Refusal("streams", 1.0)
        if result[0] == 3:
            return Refusal("auth_failures", int(result[1]) / 1000)
        self._held[token] = streams_key
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever(), name="rate-limit slots")
        return None

    async def release(self, key: str, token: str) -> None:
        streams_key = self._held.pop(token, None)
        if streams_key is None:
            return
        try:
            await self._client.zrem(streams_key, token)
        except (RedisError, OSError) as exc:
            logger.warning(
                "rate limits: could not give back a stream slot in Redis at %s (%s); it expires by itself",
                self._where,
                type(exc).__name__,
            )

    async def failures_over(self, key: str, limit: int) -> Refusal | None:
        wait = await self._call(self._failures_over, [self._failures_key(key)], [limit, self._window_ms])
        return Refusal("auth_failures", int(wait) / 1000) if wait else None

    async def add_failure(self, key: str, limit: int, token: str) -> Refusal | None:
        wait = await self._call(self._add_failure, [self._failures_key(key)], [limit, self._window_ms, token])
        return Refusal("auth_failures", int(wait) / 1000) if wait else None

    def _failures_key(self, key: str) -> str:
        return f"{self._prefix}{{{key}}}:auth_failures"

    async def check(self) -> str:
        try:
            await self._client.ping()
        except (RedisError, OSError):
            return "unreachable"
        return "ok"

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        await self._client.aclose()

    async def _call(self, script: Any, keys: list[str], args: list[int | str]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis at {self._where} does not answer ({type(exc).__name__})") from None

    async def _renew_forever(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._slot_ms / 3000)
            held = list(self._held.items())
            if not held:
                continue
            try:
                await self._renew(keys=[key for _, key in held], args=[self._slot_ms, *(token for token, _ in held)])
            except (RedisError, OSError) as exc:
                if not failing:
                    logger.warning(
                        "rate limits: could not renew stream slots in Redis at %s (%s)", self._where, type(exc).__name__
                    )
                failing = True
            else:
                failing = False
