"""An HTTP 200 whose body is one open answer: the run pumped into the response, one write per batch.

Shared by the HTTP transports (NDJSON, the AI SDK's UI message stream); each gives only how a
batch is encoded. The terminal batch ends the body in the same write, so the client has the
whole response before the run closes its upstream; a client that leaves stops the run
(``client_gone``) — a normal disconnect, never a logged exception.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from litestar import Request, Response
from litestar.response.base import ASGIResponse

from app.chat import ChatRun
from app.chat.cancel import LateWatch
from app.chat.run import WATCH_AFTER_SECONDS
from app.ops.requests import raw_send
from providers.events import ChatEvent, DoneEvent, ErrorEvent

if TYPE_CHECKING:
    from litestar.app import Litestar
    from litestar.background_tasks import BackgroundTask, BackgroundTasks
    from litestar.datastructures.cookie import Cookie
    from litestar.types import Receive, Scope, Send, TypeEncodersMap

__all__ = ("CLIENT_CLOSED_REQUEST", "Encode", "RunStream", "disconnected")

#: Encodes one batch of events into the bytes of one write.
Encode = Callable[[Sequence[ChatEvent]], bytes]
CLIENT_CLOSED_REQUEST: Final = 499  # nginx's status for this; only the access log sees it
_TERMINAL: Final = (DoneEvent, ErrorEvent)


async def disconnected(receive: Receive) -> None:
    """Return when the client has gone; the request body has been read, so nothing else can arrive."""
    while (await receive())["type"] != "http.disconnect":
        pass


class _RunBody(ASGIResponse):
    """The ASGI side of :class:`RunStream`: pumps the run into the response body."""

    __slots__ = ("_encode", "_raw_send", "_run")
    _should_set_content_length = False

    def __init__(self, run: ChatRun, encode: Encode, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._run = run
        self._encode = encode
        self._raw_send: Send | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._raw_send = raw_send(scope, send)
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._run.abandon()  # the body never ran (the client left first): close it anyway

    async def send_body(self, send: Send, receive: Receive) -> None:
        run = self._run
        encode = self._encode
        send_piece = self._raw_send or send  # the last message goes through every middleware, the rest past them
        ended = detached = False

        async def write(batch: Sequence[ChatEvent]) -> None:
            nonlocal ended
            if detached:
                return
            if isinstance(batch[-1], _TERMINAL):
                # The terminal line ends the body in the same write: the client has the whole
                # response before the run closes its upstream and its features do their last part.
                ended = True
                await send({"type": "http.response.body", "body": encode(batch), "more_body": False})
            else:
                await send_piece({"type": "http.response.body", "body": encode(batch), "more_body": True})

        def gone() -> None:
            nonlocal detached
            if run.chat.detach_on_disconnect:  # resume: the answer runs on (and is stored) for a later reader
                detached = True
            else:
                run.stop("client_gone")

        watcher = LateWatch(WATCH_AFTER_SECONDS, lambda: disconnected(receive), gone)
        try:
            await run.pump(write)
        finally:
            watcher.cancel()
        if not ended:  # the client left: nothing ended the body
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class RunStream(Response[None]):
    """An HTTP 200 whose body is one open answer, each batch encoded by ``encode``."""

    __slots__ = ("encode", "run")

    def __init__(self, run: ChatRun, encode: Encode, media_type: str, headers: Mapping[str, str]) -> None:
        super().__init__(None, status_code=200, media_type=media_type, headers=dict(headers))
        self.run = run
        self.encode = encode

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
        return _RunBody(
            self.run,
            self.encode,
            headers={**(headers or {}), **self.headers},
            cookies=[*self.cookies, *(cookies or ())],
            media_type=self.media_type,
            status_code=200,
        )
