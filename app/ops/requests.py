"""``X-Request-ID`` in and out, and one structured log line per request.

The outermost wrapper of the app: every response (a stream, a problem, a refused preflight, a
WebSocket handshake) carries the request's id, and every log line written while the request is
served names it. An incoming ``X-Request-ID`` of at most 128 visible ASCII characters is kept;
anything else is replaced by a fresh id.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from typing import TYPE_CHECKING, Any, Final

from app.ops.logs import request_id

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ("RAW_SEND", "RequestLog", "current_scope", "principal_name", "raw_send")

logger = logging.getLogger("app.requests")

#: The ASGI scope of the request being served (route template, principal, client), or ``None``.
current_scope: Final[contextvars.ContextVar[Scope | None]] = contextvars.ContextVar("current_scope", default=None)

#: The scope key under which the server's own ``send`` is kept (see :func:`raw_send`).
RAW_SEND: Final = "agent_backend.raw_send"

_VALID_ID: Final = re.compile(rb"[\x21-\x7e]{1,128}")
_HEADER: Final = b"x-request-id"


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == _HEADER:
            return value.decode("ascii") if _VALID_ID.fullmatch(value) else None
    return None


def raw_send(scope: Scope, chained: Send) -> Send:
    """The server's ``send``, past every middleware, for the body of a stream once its start has gone out.

    The middleware around a route (exception handling, Prometheus, CORS, ours) only look at a
    response's start, and at its end for the duration; wrapped, each of them costs a call per
    write, which for a stream is per upstream read. A transport sends the start and the last body
    message through ``chained`` and the pieces in between through this.
    """
    send: Send | None = scope.get(RAW_SEND)  # type: ignore[assignment]
    return send or chained


def principal_name(scope: Scope | dict[str, Any]) -> str:
    """The principal authentication put on the request (``anonymous`` without auth)."""
    user = scope.get("user")
    name = getattr(user, "name", None)
    return name if isinstance(name, str) else "anonymous"


class RequestLog:
    """Assigns the request id, adds it to the response, and logs the request when it is over."""

    __slots__ = ("_app",)

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind: str = scope["type"]
        if kind not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        rid = _incoming_id(scope) or uuid.uuid4().hex
        header = (_HEADER, rid.encode("ascii"))
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            event: str = message["type"]
            if event == "http.response.body" or event == "websocket.send":  # the per-token path: nothing to do
                await send(message)
                return
            start: dict[str, Any] = message  # type: ignore[assignment]
            if event in ("http.response.start", "websocket.http.response.start"):
                status = start["status"]
                start["headers"] = [*start.get("headers", ()), header]
            elif event == "websocket.accept":
                status = 101
                start["headers"] = [*start.get("headers", ()), header]
            elif event == "websocket.close" and not status:
                status = 403  # closed before the handshake: what the server answers
            await send(message)

        scope[RAW_SEND] = send  # type: ignore[typeddict-unknown-key]
        rid_token = request_id.set(rid)
        scope_token = current_scope.set(scope)
        started = time.perf_counter()
        try:
            await self._app(scope, receive, send_with_id)
        finally:
            fields: dict[str, Any] = {
                "method": scope.get("method", "WS"),
                "route": scope.get("path_template") or "<unrouted>",
                "status": status or 500,
                "principal": principal_name(scope),
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            }
            logger.info("request", extra={"fields": fields})
            current_scope.reset(scope_token)
            request_id.reset(rid_token)
