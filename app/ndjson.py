"""Events to NDJSON: one line per event, one write per batch the upstream read produced."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Final

import anyio
import msgspec

from providers.base import EventStream
from providers.errors import AgentError
from providers.events import ChatEvent, DoneEvent, ErrorEvent, MetaEvent, error_event

__all__ = ("NDJSON_MEDIA_TYPE", "encode_batch", "encode_line", "ndjson_stream")

NDJSON_MEDIA_TYPE: Final = "application/x-ndjson"
_encoder: Final = msgspec.json.Encoder()
logger = logging.getLogger("app.ndjson")
_TERMINAL: Final = (DoneEvent, ErrorEvent)


def encode_line(event: ChatEvent) -> bytes:
    """One event as one NDJSON line."""
    return _encoder.encode(event) + b"\n"


def encode_batch(batch: Sequence[ChatEvent]) -> bytes:
    """Several events as consecutive lines, in one buffer (one write to the client)."""
    if len(batch) == 1:
        return _encoder.encode(batch[0]) + b"\n"
    buffer = bytearray()
    for event in batch:
        _encoder.encode_into(event, buffer, -1)
        buffer += b"\n"
    return bytes(buffer)


async def ndjson_stream(meta: MetaEvent, events: EventStream) -> AsyncIterator[bytes]:
    """The response body: the meta line, then each batch as soon as it exists, then one terminal line.

    The upstream is closed in every case: answer finished, client gone (cancellation), or a bug.
    """
    terminated = False
    try:
        yield encode_line(meta)
        async for batch in events:
            yield encode_batch(batch)
            terminated = isinstance(batch[-1], _TERMINAL)
        if not terminated:
            logger.error("a provider's stream ended without a done or error event")
            yield encode_line(error_event(AgentError("the answer ended unexpectedly; try again")))
    except AgentError as exc:  # a provider may raise a contract error instead of yielding it
        if not terminated:
            yield encode_line(error_event(exc))
    except Exception:
        logger.exception("the answer stream failed")
        if not terminated:
            yield encode_line(error_event(AgentError("internal error while streaming; try again")))
    finally:
        with anyio.CancelScope(shield=True):
            await events.aclose()
