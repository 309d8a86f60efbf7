"""Live answers through Redis, so that a resume or a stop reaches the replica that is generating.

Keys (under ``rate_limit.key_prefix``, every one with an expiry):
``<prefix>streams:answer:<uuid>`` — a Redis stream whose entries hold the answer's NDJSON lines
(what queued since the last write), the terminal line last; ``<prefix>streams:<owner hash>:conversation:<uuid>``
— which answer streams there (a client's chat id is resolved to its conversation first), deleted
when it ends. Stops travel on the channel ``<prefix>streams:stop``; every replica listens and stops the
answer if it is its own.

The producer never waits on Redis per batch: ``batch`` queues the encoded lines and a task of
the answer's own sends what has queued in one round trip, at most every 50 ms, so a slow Redis
delays readers on other replicas, never the original stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.transports.ndjson import encode_batch
from providers.events import (
    ChatEvent,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    MetaEvent,
    ReasoningEvent,
    ToolCallDeltaEvent,
    ToolCallEvent,
)

__all__ = ("RedisAnswer", "RedisStreams", "decode_lines")

logger = logging.getLogger("app.streams")

_TIMEOUT_SECONDS: Final = 2.0
#: Every key lives at most this long after its last write (an answer that streams longer renews them).
_EXPIRE_SECONDS: Final = 3600
#: An ended answer's entries stay this long for readers still replaying it.
_ENDED_EXPIRE_SECONDS: Final = 60
_READ_BLOCK_MS: Final = 1000
_IDLE_SECONDS: Final = 300.0
_FLUSH_SECONDS: Final = 5.0
#: Batches that arrive within this long go to Redis in one round trip (readers elsewhere lag by at most this).
_COALESCE_SECONDS: Final = 0.05
#: The keys' expiry is renewed this often while an answer streams (not with every write).
_RENEW_SECONDS: Final = 60.0
_KINDS: Final[dict[str, type[Any]]] = {
    "meta": MetaEvent,
    "delta": DeltaEvent,
    "reasoning": ReasoningEvent,
    "tool_call_delta": ToolCallDeltaEvent,
    "tool_call": ToolCallEvent,
    "done": DoneEvent,
    "error": ErrorEvent,
}
_TERMINAL: Final = (DoneEvent, ErrorEvent)


def decode_lines(data: bytes) -> list[ChatEvent]:
    """NDJSON lines (``encode_batch``'s) back into events."""
    events: list[ChatEvent] = []
    for line in data.splitlines():
        if not line:
            continue
        raw = msgspec.json.decode(line)
        kind = next(iter(raw))
        events.append(msgspec.convert(raw, _KINDS[kind]))
    return events


def _owner_key(owner: str) -> str:
    # Owner names are free text: hashed, so that no name can reach into another's keys.
    return hashlib.sha256(owner.encode()).hexdigest()[:32]


class RedisAnswer:
    """One answer of this process, published: queued per batch, sent by its own task."""

    __slots__ = ("_client", "_index", "_key", "_pending", "_renewed", "_task", "_wake", "_where")

    def __init__(self, client: aioredis.Redis, key: str, index: list[str], where: str) -> None:
        self._client = client
        self._key = key
        self._index = index
        self._where = where
        self._pending: list[bytes] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._renewed = 0.0

    def start(self) -> None:
        self._renewed = time.monotonic()  # the keys were just written with their expiry
        self._task = asyncio.get_running_loop().create_task(self._send_forever(), name="resume publisher")

    def add(self, batch: Sequence[ChatEvent]) -> None:
        """Queue one batch (synchronous: the pipeline's per-read hook)."""
        self._pending.append(encode_batch(batch))
        self._wake.set()

    async def end(self, last: Sequence[ChatEvent] | None) -> None:
        """Send what is queued (and ``last``), then drop the index keys: nothing streams there any more."""
        if last:
            self._pending.append(encode_batch(last))
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            async with asyncio.timeout(_FLUSH_SECONDS):
                await self._flush()
                await self._client.expire(self._key, _ENDED_EXPIRE_SECONDS)
                await self._client.delete(*self._index)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning(
                "resume: could not publish an answer's end to Redis at %s (%s)", self._where, type(exc).__name__
            )

    async def _send_forever(self) -> None:
        failing = False
        while True:
            await self._wake.wait()
            await asyncio.sleep(_COALESCE_SECONDS)  # what arrives meanwhile goes in the same round trip
            self._wake.clear()
            try:
                await self._flush()
                failing = False
            except (RedisError, OSError) as exc:
                if not failing:  # once per outage, not per batch
                    logger.warning("resume: Redis at %s does not take batches (%s)", self._where, type(exc).__name__)
                failing = True
                self._pending.clear()  # readers elsewhere miss them; the stream itself goes on

    async def _flush(self) -> None:
        if not self._pending:
            return
        # One entry for everything queued: the lines keep their order, and a reader splits them again.
        data = b"".join(self._pending)
        self._pending = []
        now = time.monotonic()
        if now - self._renewed <= _RENEW_SECONDS:
            await self._client.xadd(self._key, {"b": data})
            return
        self._renewed = now
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.xadd(self._key, {"b": data})
            pipe.expire(self._key, _EXPIRE_SECONDS)
            for key in self._index:
                pipe.expire(key, _EXPIRE_SECONDS)
            await pipe.execute()


class RedisStreams:
    """This process's link to the other replicas' live answers."""

    __slots__ = ("_client", "_listener", "_prefix", "_where")

    def __init__(self, url: str, prefix: str) -> None:
        # No I/O here: connections are made on first use, on the loop that uses them.
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            # Reads block up to a second (XREAD BLOCK): the socket timeout is well above that, never unbounded.
            url,
            socket_connect_timeout=_TIMEOUT_SECONDS,
            socket_timeout=5.0,
            retry=Retry(NoBackoff(), 1),
        )
        pool = self._client.connection_pool.connection_kwargs
        self._where = f"{pool.get('host', 'redis')}:{pool.get('port', '')}"
        self._prefix = f"{prefix}streams:"
        self._listener: asyncio.Task[None] | None = None

    def _conversation_key(self, owner: str, conversation_id: str) -> str:
        return f"{self._prefix}{_owner_key(owner)}:conversation:{conversation_id}"

    async def publish(
        self, owner: str, conversation_id: str, answer_id: str, first: Sequence[ChatEvent]
    ) -> RedisAnswer | None:
        """Announce an answer that starts streaming; ``None`` (logged) when Redis does not answer."""
        key = f"{self._prefix}answer:{answer_id}"
        index = [self._conversation_key(owner, conversation_id)]
        try:
            async with asyncio.timeout(_TIMEOUT_SECONDS), self._client.pipeline(transaction=False) as pipe:
                pipe.xadd(key, {"b": encode_batch(first)})  # the stream exists (with its expiry) before it is named
                pipe.expire(key, _EXPIRE_SECONDS)
                for name in index:
                    pipe.set(name, key, ex=_EXPIRE_SECONDS)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning(
                "resume: Redis at %s does not answer (%s); this answer resumes here only",
                self._where,
                type(exc).__name__,
            )
            return None
        answer = RedisAnswer(self._client, key, index, self._where)
        answer.start()
        return answer

    async def _answer_key(self, owner: str, conversation_id: str) -> str | None:
        name = self._conversation_key(owner, conversation_id)
        try:
            async with asyncio.timeout(_TIMEOUT_SECONDS):
                found = await self._client.get(name)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("resume: Redis at %s does not answer (%s)", self._where, type(exc).__name__)
            return None
        return found.decode() if isinstance(found, bytes) else None

    async def follow(self, owner: str, conversation_id: str) -> AsyncIterator[Sequence[ChatEvent]] | None:
        """The answer of ``owner`` streaming on ``conversation_id`` (replay, then live), or ``None`` when none is."""
        key = await self._answer_key(owner, conversation_id)
        if key is None:
            return None
        return self._read(key)

    async def _read(self, key: str) -> AsyncIterator[Sequence[ChatEvent]]:
        last = "0-0"
        heard = time.monotonic()
        while time.monotonic() - heard < _IDLE_SECONDS:
            try:
                found: Any = await self._client.xread({key: last}, block=_READ_BLOCK_MS, count=256)
            except (RedisError, OSError) as exc:
                logger.warning(
                    "resume: reading an answer from Redis at %s failed (%s)", self._where, type(exc).__name__
                )
                return
            if not found:
                continue
            heard = time.monotonic()
            batch: list[ChatEvent] = []
            for entry_id, fields in found[0][1]:  # [[key, [(id, {b"b": lines}), …]]]
                last = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                batch.extend(decode_lines(fields[b"b"]))
            if batch:
                yield batch
                if isinstance(batch[-1], _TERMINAL):
                    return

    async def request_stop(self, owner: str, conversation_id: str) -> bool:
        """Ask every replica to stop ``owner``'s answer on ``conversation_id``; whether one was streaming there.

        Returns once the answer has ended (its index key is gone), or after a few seconds.
        """
        name = self._conversation_key(owner, conversation_id)
        try:
            if await self._client.get(name) is None:
                return False
            await self._client.publish(f"{self._prefix}stop", name)
            deadline = time.monotonic() + _FLUSH_SECONDS
            # The producer is on another replica: nothing here to wait on but the key it deletes.
            while time.monotonic() < deadline and await self._client.exists(name):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        except (RedisError, OSError) as exc:
            logger.warning("resume: Redis at %s does not answer (%s)", self._where, type(exc).__name__)
            return False
        return True

    def listen_for_stops(self, stop: Callable[[str], None]) -> None:
        """Call ``stop(index key)`` for every stop a replica publishes (a task until :meth:`aclose`)."""
        self._listener = asyncio.get_running_loop().create_task(self._listen(stop), name="resume stops")

    def conversation_key(self, owner: str, conversation_id: str) -> str:
        return self._conversation_key(owner, conversation_id)

    async def _listen(self, stop: Callable[[str], None]) -> None:
        while True:
            try:
                async with self._client.pubsub() as pubsub:
                    await pubsub.subscribe(f"{self._prefix}stop")
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if message is not None and isinstance(message.get("data"), bytes):
                            stop(message["data"].decode())
            except (RedisError, OSError) as exc:
                logger.warning(
                    "resume: listening for stops on Redis at %s failed (%s); retrying", self._where, type(exc).__name__
                )
                await asyncio.sleep(1.0)

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._client.aclose()
