"""``WS /chat/ws``: many chats over one socket, the same events as ``POST /chat``, one per text frame.

Client frames are JSON text: ``{"type":"chat","id"?:…, …the POST /chat body…}`` and
``{"type":"cancel"}``. Each server frame is one event object exactly as its NDJSON line, encoded
by the same encoder, plus ``"id"`` when the chat frame had one. A frame is validated first (an
invalid one is ``invalid_request`` even while a chat runs); a valid ``chat`` while one runs is
``busy``; neither closes the socket. Everything about a chat (planning, admission, the upstream,
storage, limits) is the chat pipeline's (:mod:`app.chat`): this module only reads frames,
starts and stops runs, and writes their events.

Backpressure: events are written as the pump produces them, one ``send`` per event, with no
queue of our own; uvicorn's ``send`` waits while the socket's write buffer is above its high-water
mark, so a client that stops reading stops the pump, which stops reading the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

import msgspec
from litestar import WebSocket, websocket
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect
from litestar.params import SkipValidation

from app.auth import WS_SUBPROTOCOL, WebSocketHandshake, accepted_subprotocol, refuse_handshake
from app.chat import ChatPipeline, ChatRequest, ChatRun, parse_chat_request
from app.config import Settings
from app.errors import Busy, InvalidRequest, PayloadTooLarge
from app.ops.requests import raw_send
from app.principal import client_address, principal_of
from providers.errors import AgentError, RateLimited
from providers.events import ChatEvent, DoneEvent, error_event

__all__ = ("FRAMES_DOC", "SUBPROTOCOL", "chat_socket")

logger = logging.getLogger("app.websocket")

#: The subprotocol the service speaks; a browser offers it (and ``bearer.<key>`` when auth is on).
SUBPROTOCOL: Final = WS_SUBPROTOCOL
_CLOSE_GOING_AWAY: Final = 1001
_encoder: Final = msgspec.json.Encoder()
_frame_decoder: Final = msgspec.json.Decoder()
_CANCELLED: Final = DoneEvent(done=True, finish_reason="cancelled")

FRAMES_DOC: Final = """
### WebSocket: `WS /chat/ws`

One socket, many chats, the same events as `POST /chat`. Offer the subprotocol `agent-backend.v1`
(with auth on, also `bearer.<key>`).

| client frame (JSON text) | server frames |
| --- | --- |
| `{"type":"chat","id"?:…, …}` with the `POST /chat` body fields | the stream's events, one object per text \
frame, as the NDJSON lines plus `"id"` when the chat frame had one: `meta`, `delta`…, `reasoning`…, then one \
terminal `done` or `error` |
| `{"type":"cancel"}` | the running chat ends with `{"done":true,"finish_reason":"cancelled"}` |
| a `chat` while one is running | `{"error":{"code":"busy",…},"id":…}`; the running chat goes on |
| anything else (not JSON, not an object, unknown `type`, invalid fields, binary) | \
`{"error":{"code":"invalid_request",…}}`; the socket stays open |

Failures that `POST /chat` answers with an HTTP error are an `error` event with the same code.
Closing the socket cancels the running chat. Idle sockets (no chat running, no client frame) are
closed after `websocket.idle_timeout_seconds`.
"""


def _frame_id(frame: dict[str, Any]) -> object:
    """The chat frame's ``id`` when it is one a client can match (a string or an integer)."""
    value = frame.get("id")
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


class _Session:
    """One socket: reads frames, runs at most one chat at a time, ends idle sockets."""

    __slots__ = (
        "_cancel",
        "_chat",
        "_client",
        "_gone",
        "_idle",
        "_last_active",
        "_max_frame",
        "_pipeline",
        "_principal",
        "_run",
        "_socket",
        "_timeout",
        "closed",
    )

    def __init__(self, socket: WebSocket[Any, Any, Any], pipeline: ChatPipeline, settings: Settings) -> None:
        self._socket = socket
        self._pipeline = pipeline
        self._principal = principal_of(socket)
        self._client = client_address(socket)
        self._idle = settings.websocket.idle_timeout_seconds
        self._max_frame = settings.limits.max_body_bytes
        self._chat: asyncio.Task[None] | None = None
        self._run: ChatRun | None = None
        self._cancel: asyncio.Event | None = None  # set to abandon a chat still opening its upstream
        self._gone = False
        self.closed = False
        """The session closed the socket itself (for being idle)."""
        self._timeout: asyncio.Timeout | None = None
        self._last_active = asyncio.get_running_loop().time()

    async def serve(self) -> None:
        try:
            while not self._gone:
                message = await self._receive()
                if message is None:
                    break
                await self._frame(message)
        finally:
            self._gone = True
            await self._stop_chat("client_gone")

    async def _receive(self) -> dict[str, Any] | None:
        """The next client frame; ``None`` when the socket closed (or was closed for being idle)."""
        try:
            async with asyncio.timeout_at(self._idle_deadline()) as self._timeout:
                message: dict[str, Any] = await self._socket.receive()  # type: ignore[assignment]
        except TimeoutError:
            logger.info("closing a WebSocket idle for %g s", self._idle)
            await self._close(1000, f"idle for {self._idle:g} s")
            return None
        except WebSocketDisconnect:
            return None
        finally:
            self._timeout = None
        if message["type"] == "websocket.disconnect":
            return None
        self._last_active = asyncio.get_running_loop().time()
        return message

    def _idle_deadline(self) -> float | None:
        return None if self._chat is not None else self._last_active + self._idle

    async def _frame(self, message: dict[str, Any]) -> None:
        text = message.get("text")
        if text is None:
            await self._refuse(InvalidRequest("binary frames are not accepted: send JSON text frames"), None)
            return
        if len(text) > self._max_frame:
            await self._refuse(PayloadTooLarge(f"the frame is larger than {self._max_frame} bytes"), None)
            return
        try:
            frame = _frame_decoder.decode(text)
        except msgspec.DecodeError as exc:
            await self._refuse(InvalidRequest(f"the frame is not JSON: {exc}"), None)
            return
        if not isinstance(frame, dict):
            await self._refuse(InvalidRequest('a frame is a JSON object such as {"type":"chat","message":"Hi"}'), None)
            return
        frame_id = _frame_id(frame)
        kind = frame.get("type")
        if kind == "chat":
            try:
                request = parse_chat_request(frame, self._pipeline.limits)
            except AgentError as exc:
                await self._refuse(exc, frame_id)
                return
            if self._chat is not None:
                await self._refuse(Busy("a chat is already running on this socket; cancel it or wait"), frame_id)
                return
            self._chat = asyncio.create_task(self._converse(request, frame_id))
        elif kind == "cancel":
            await self._stop_chat("cancelled", wait=False)
        else:
            await self._refuse(InvalidRequest(f'unknown frame type {kind!r}: send "chat" or "cancel"'), frame_id)

    async def _converse(self, request: ChatRequest, frame_id: object) -> None:
        send = self._sender(frame_id)
        cancel = self._cancel = asyncio.Event()
        try:
            try:
                plan = await self._pipeline.plan_request(request, self._principal, self._client)
                run = await self._pipeline.open(plan, until_gone=cancel.wait)
            except AgentError as exc:
                await send((error_event(exc),))
                return
            if run is None:  # cancelled (or the socket closed) while the upstream was opening
                await send((_CANCELLED,))
                return
            self._run = run
            await run.pump(send)
        except Exception:
            logger.exception("a WebSocket chat failed")
        finally:
            self._run = None
            self._cancel = None
            self._chat = None
            self._last_active = asyncio.get_running_loop().time()
            if self._timeout is not None:  # the reader is waiting: restart its idle clock
                self._timeout.reschedule(self._last_active + self._idle)

    def shutdown(self) -> None:
        """The service is stopping: end the running chat with ``server_shutdown`` while the socket is open."""
        if self._run is not None:
            self._run.stop("shutdown")
        elif self._cancel is not None:
            self._cancel.set()

    async def _stop_chat(self, reason: str, *, wait: bool = True) -> None:
        run, cancel, chat = self._run, self._cancel, self._chat
        if run is not None:
            if reason == "cancelled":
                run.stop("cancelled")
            elif not run.chat.detach_on_disconnect:  # resume: a socket that closes only detaches
                run.stop("client_gone")
        elif cancel is not None:
            cancel.set()
        if wait and chat is not None:
            await asyncio.gather(chat, return_exceptions=True)

    def _sender(self, frame_id: object) -> Any:
        suffix = b',"id":' + _encoder.encode(frame_id) + b"}" if frame_id is not None else b""
        send = raw_send(self._socket.scope, self._socket.send)  # frames past the middleware, as NDJSON's pieces

        async def send_events(batch: Sequence[ChatEvent]) -> None:
            for event in batch:
                data = _encoder.encode(event)
                if suffix:
                    data = data[:-1] + suffix
                if self._gone:
                    return
                try:
                    await send({"type": "websocket.send", "text": data.decode(), "bytes": None})
                except (WebSocketDisconnect, OSError):  # the client left mid-answer
                    self._gone = True
                    if self._run is not None and not self._run.chat.detach_on_disconnect:
                        self._run.stop("client_gone")
                    return

        return send_events

    async def _refuse(self, error: AgentError, frame_id: object) -> None:
        await self._sender(frame_id)((error_event(error),))

    async def _close(self, code: int, reason: str) -> None:
        self._gone = True
        self.closed = True
        with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):  # already gone
            await self._socket.close(code=code, reason=reason)


# The handshake is authenticated by the auth middleware (the bearer.<key> subprotocol) when auth is
# on; WebSocketHandshake refuses a foreign Origin whatever the auth (CORS does not cover sockets).
@websocket("/chat/ws", name="chat:socket", middleware=[WebSocketHandshake])
async def chat_socket(
    socket: WebSocket[Any, Any, Any],
    pipeline: NamedDependency[SkipValidation[ChatPipeline]],
    state: State,
) -> None:
    """Chat over one WebSocket (see the module docstring; the frames are in the OpenAPI description)."""
    settings: Settings = state.settings
    sockets: Counter[str] = state.open_sockets
    principal = principal_of(socket)
    owner = principal.name if principal.kind != "anonymous" else f"client:{client_address(socket)}"
    limit = settings.websocket.max_sockets_per_principal
    if sockets[owner] >= limit:
        error = RateLimited(f"at most {limit} WebSockets may be open at once", retry_after="1")
        await refuse_handshake(socket.scope, socket.send, error)
        return
    await socket.accept(subprotocols=accepted_subprotocol(socket.scope))
    sockets[owner] += 1
    session = _Session(socket, pipeline, settings)
    sessions: set[_Session] = state.socket_sessions
    sessions.add(session)
    try:
        await session.serve()
    finally:
        sessions.discard(session)
        sockets[owner] -= 1
        if not sockets[owner]:
            del sockets[owner]
        if not session.closed and socket.connection_state != "disconnect":
            with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):  # already gone
                await socket.close(code=_CLOSE_GOING_AWAY)
