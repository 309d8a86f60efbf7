"""``POST /chat``: the chat pipeline's events as NDJSON, one line per event, one write per batch."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

import msgspec
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import SkipValidation
from litestar.response.base import ASGIResponse

from app.auth import ADDRESS_CHECKED_ON_ADMISSION
from app.chat import ChatPipeline, ChatPlan, ChatRun
from app.chat.cancel import LateWatch
from app.chat.run import WATCH_AFTER_SECONDS
from app.openapi import problem_responses
from app.ops.requests import raw_send
from providers.events import ChatEvent, DoneEvent, ErrorEvent

if TYPE_CHECKING:
    from litestar.app import Litestar
    from litestar.background_tasks import BackgroundTask, BackgroundTasks
    from litestar.datastructures.cookie import Cookie
    from litestar.types import Receive, Scope, Send, TypeEncodersMap

__all__ = ("NDJSON_MEDIA_TYPE", "STREAM_HEADERS", "ChatController", "NDJSONStream", "encode_batch")

NDJSON_MEDIA_TYPE: Final = "application/x-ndjson"
#: Keep browsers, nginx and other proxies from caching or buffering the stream.
STREAM_HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_CLIENT_CLOSED_REQUEST: Final = 499  # nginx's status for this; only the access log sees it
_encoder: Final = msgspec.json.Encoder()
_TERMINAL: Final = (DoneEvent, ErrorEvent)

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


async def _disconnected(receive: Receive) -> None:
    """Return when the client has gone; the request body has been read, so nothing else can arrive."""
    while (await receive())["type"] != "http.disconnect":
        pass


class _NDJSONBody(ASGIResponse):
    """The ASGI side of :class:`NDJSONStream`: pumps the run into the response body."""

    __slots__ = ("_raw_send", "_run")
    _should_set_content_length = False

    def __init__(self, run: ChatRun, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._run = run
        self._raw_send: Send | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._raw_send = raw_send(scope, send)
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._run.abandon()  # the body never ran (the client left first): close it anyway

    async def send_body(self, send: Send, receive: Receive) -> None:
        run = self._run
        send_piece = self._raw_send or send  # the last message goes through every middleware, the rest past them
        ended = False

        async def write(batch: Sequence[ChatEvent]) -> None:
            nonlocal ended
            if isinstance(batch[-1], _TERMINAL):
                # The terminal line ends the body in the same write: the client has the whole
                # response before the run closes its upstream and its features do their last part.
                ended = True
                await send({"type": "http.response.body", "body": encode_batch(batch), "more_body": False})
            else:
                await send_piece({"type": "http.response.body", "body": encode_batch(batch), "more_body": True})

        watcher = LateWatch(WATCH_AFTER_SECONDS, lambda: _disconnected(receive), lambda: run.stop("client_gone"))
        try:
            await run.pump(write)
        finally:
            watcher.cancel()
        if not ended:  # the client left: nothing ended the body
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class NDJSONStream(Response[None]):
    """An HTTP 200 whose body is one open answer, streamed as NDJSON."""

    __slots__ = ("run",)

    def __init__(self, run: ChatRun) -> None:
        super().__init__(None, status_code=200, media_type=NDJSON_MEDIA_TYPE, headers=STREAM_HEADERS)
        self.run = run

    def to_asgi_response(
        self,
        app: Litestar | None,
        request: Request[Any, Any, Any],
        *,
        background: BackgroundTask | BackgroundTasks | None = None,
        cookies: Iterable[Cookie] | None = None,
        encoded_headers: Iterable[tuple[bytes, bytes]] | None = None,
        headers: dict[str, str] | None = None,
        is_head_response: bool = False,
        media_type: Any = None,
        status_code: int | None = None,
        type_encoders: TypeEncodersMap | None = None,
    ) -> ASGIResponse:
        return _NDJSONBody(
            self.run,
            headers={**(headers or {}), **self.headers},
            cookies=[*self.cookies, *(cookies or ())],
            media_type=NDJSON_MEDIA_TYPE,
            status_code=200,
        )


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
        run = await pipeline.open(plan, until_gone=lambda: _disconnected(request.receive))
        if run is None:
            return Response(None, status_code=_CLIENT_CLOSED_REQUEST)
        return NDJSONStream(run)
