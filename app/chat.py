"""``POST /chat``: validate, open the upstream, stream its answer as NDJSON."""

from __future__ import annotations

from typing import Any, Final

import anyio
from litestar import Controller, Request, Response, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import SkipValidation
from litestar.response import Stream

from app.errors import PROBLEM_MEDIA_TYPE
from app.ndjson import NDJSON_MEDIA_TYPE, ndjson_stream
from app.schemas import Problem
from providers.base import ChatParams, EventStream, LLMProvider
from providers.events import ChatEvent, Meta, MetaEvent

__all__ = ("STREAM_HEADERS", "ChatController")

#: Keep browsers, nginx and other proxies from caching or buffering the stream.
STREAM_HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

_EVENTS_DOC = """One JSON object per line, each written as soon as it exists:
`{"meta":…}` first; `{"delta":"…"}` per piece of answer text; `{"reasoning":"…"}` per piece of
reasoning text; then exactly one terminal line, `{"done":true,…}` or `{"error":{…}}`."""


_CLIENT_CLOSED_REQUEST: Final = 499  # nginx's status for this; only the access log sees it


async def _open_unless_client_leaves(
    request: Request[Any, Any, Any], provider: LLMProvider, params: ChatParams
) -> EventStream | None:
    """``provider.open(params)``, abandoned (upstream request closed) if the client disconnects.

    Some servers send no headers until the prompt is processed, which can take long; a client
    that gives up meanwhile must not leave the LLM working for nobody.
    """
    opened: EventStream | None = None
    failure: Exception | None = None
    async with anyio.create_task_group() as group:

        async def cancel_on_disconnect() -> None:
            # The body has been read, so the next message can only be the disconnect.
            if (await request.receive())["type"] == "http.disconnect":
                group.cancel_scope.cancel()

        group.start_soon(cancel_on_disconnect)
        try:
            opened = await provider.open(params)
        except Exception as exc:  # raised outside the group, so it is not wrapped in an ExceptionGroup
            failure = exc
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return opened


def _problem(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=Problem,
        media_type=PROBLEM_MEDIA_TYPE,
        description=description,
        generate_examples=False,
    )


class ChatController(Controller):
    """Chat with an LLM, streamed."""

    path = "/chat"
    tags = ["chat"]  # noqa: RUF012 (Litestar reads this class attribute as given)

    @post(
        "/",
        status_code=200,
        operation_id="chat",
        summary="Stream an answer as NDJSON",
        description="Relays the chosen LLM server's streamed answer, one JSON line per event.",
        responses={
            200: ResponseSpec(
                data_container=ChatEvent,
                media_type=NDJSON_MEDIA_TYPE,
                description=_EVENTS_DOC,
                generate_examples=False,
            ),
            400: _problem("invalid_request or upstream_rejected"),
            404: _problem("model_not_found (or not_found)"),
            413: _problem("payload_too_large"),
            429: _problem("rate_limited, with Retry-After"),
            500: _problem("internal_error"),
            502: _problem("upstream_unavailable or upstream_protocol_error"),
            503: _problem("upstream_unavailable where the upstream said 503"),
            504: _problem("upstream_timeout"),
        },
    )
    async def chat(
        self,
        request: Request[Any, Any, Any],
        params: NamedDependency[SkipValidation[ChatParams]],
        provider: NamedDependency[SkipValidation[LLMProvider]],
    ) -> Stream | Response[None]:
        # Awaiting the upstream's headers here, before returning, is what lets a refused or
        # unreachable upstream become an HTTP error instead of a 200 with an error line.
        events = await _open_unless_client_leaves(request, provider, params)
        if events is None:
            return Response(None, status_code=_CLIENT_CLOSED_REQUEST)
        meta = MetaEvent(Meta(model=params.model, provider=provider.name))
        return Stream(
            ndjson_stream(meta, events),
            media_type=NDJSON_MEDIA_TYPE,
            headers=STREAM_HEADERS,
            # Closes the upstream even if the body generator is never started (client gone).
            background=BackgroundTask(events.aclose),
        )
