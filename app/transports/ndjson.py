"""``POST /chat``: the chat pipeline's events as NDJSON, one line per event, one write per batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import SkipValidation

from app.auth import ADDRESS_CHECKED_ON_ADMISSION
from app.chat import ChatPipeline, ChatPlan, ChatRun
from app.openapi import problem_responses
from app.transports.run_body import CLIENT_CLOSED_REQUEST, RunStream, disconnected
from providers.events import ChatEvent

__all__ = ("NDJSON_MEDIA_TYPE", "STREAM_HEADERS", "ChatController", "NDJSONStream", "encode_batch")

NDJSON_MEDIA_TYPE: Final = "application/x-ndjson"
#: Keep browsers, nginx and other proxies from caching or buffering the stream.
STREAM_HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_encoder: Final = msgspec.json.Encoder()

_EVENTS_DOC = """One JSON object per line, each written as soon as it exists:
`{"meta":…}` first; `{"delta":"…"}` per piece of answer text; `{"reasoning":"…"}` per piece of
reasoning text; then exactly one terminal line, `{"done":true,…}` or `{"error":{…}}`."""


def encode_batch(batch: Sequence[ChatEvent]) -> bytes:
    """Events as consecutive NDJSON lines in one buffer (one write to the client)."""
    if len(batch) == 1:
        return _encoder.encode(batch[0]) + b"\n"
    buffer = bytearray()
    for event in batch:
        _encoder.encode_into(event, buffer, -1)
        buffer += b"\n"
    return bytes(buffer)


class NDJSONStream(RunStream):
    """An HTTP 200 whose body is one open answer, streamed as NDJSON."""

    __slots__ = ()

    def __init__(self, run: ChatRun) -> None:
        super().__init__(run, encode_batch, NDJSON_MEDIA_TYPE, STREAM_HEADERS)


# A union of Structs renders as oneOf; typed Any because `data_container` is annotated as a
# class, and whether mypy accepts a union there changes between mypy releases.
_EVENT_UNION: Any = ChatEvent


class ChatController(Controller):
    """Chat with an LLM, streamed."""

    path = "/chat"
    tags = ["chat"]  # noqa: RUF012 (Litestar reads this class attribute as given)
    opt = {ADDRESS_CHECKED_ON_ADMISSION: True}  # noqa: RUF012 (every request here is a chat the limits admit)

    @post(
        "/",
        status_code=200,
        operation_id="chat",
        summary="Stream an answer as NDJSON",
        description="Relays the chosen LLM server's streamed answer, one JSON line per event.",
        responses={
            200: ResponseSpec(
                data_container=_EVENT_UNION,
                media_type=NDJSON_MEDIA_TYPE,
                description=_EVENTS_DOC,
                generate_examples=False,
            ),
            **problem_responses(400, 401, 404, 409, 413, 429, 500, 502, 503, 504),
        },
    )
    async def chat(
        self,
        request: Request[Any, Any, Any],
        plan: NamedDependency[SkipValidation[ChatPlan]],
        pipeline: NamedDependency[SkipValidation[ChatPipeline]],
    ) -> NDJSONStream | Response[None]:
        # Awaiting the upstream's headers here, before returning, is what lets a refused or
        # unreachable upstream become an HTTP error instead of a 200 with an error line.
        run = await pipeline.open(plan, until_gone=lambda: disconnected(request.receive))
        if run is None:
            return Response(None, status_code=CLIENT_CLOSED_REQUEST)
        return NDJSONStream(run)
