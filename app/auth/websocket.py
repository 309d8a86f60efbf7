"""What a WebSocket route declares to be safe (CONTRACT §7): the origin check, the refusal, the subprotocol.

A WebSocket route takes part like this::

    @websocket("/chat/ws", middleware=[WebSocketHandshake])
    async def chat_ws(socket: WebSocket) -> None:
        await socket.accept(subprotocols=accepted_subprotocol(socket.scope))

:class:`WebSocketHandshake` refuses a handshake whose ``Origin`` is present and not in
``cors_origins`` (CORS does not protect WebSockets), with or without auth. Authentication itself
is :class:`~app.auth.middleware.AuthMiddleware`'s (it runs first and checks the origin too): the
key travels as the ``bearer.<key>`` subprotocol, never in the query string, and a refused
handshake is an HTTP error before it is accepted — through the ASGI WebSocket denial response
where the server has it (uvicorn does), else a close (the server then answers 403).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from litestar.enums import ScopeType

from app.errors import PROBLEM_MEDIA_TYPE, Unauthorized, problem_body
from providers.errors import AgentError

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

__all__ = (
    "WS_SUBPROTOCOL",
    "WebSocketHandshake",
    "accepted_subprotocol",
    "origin_refusal",
    "refuse_handshake",
)

#: The subprotocol the server selects; clients offer it next to ``bearer.<key>``.
WS_SUBPROTOCOL: Final = "agent-backend.v1"
_DENIAL_EXTENSION: Final = "websocket.http.response"
_POLICY_VIOLATION: Final = 1008
_TRY_AGAIN_LATER: Final = 1013


def accepted_subprotocol(scope: Scope) -> str | None:
    """The subprotocol to pass to ``accept``: ``agent-backend.v1`` when offered, else none.

    Never one of the client's others: ``bearer.<key>`` would send the key back in a header.
    """
    offered: Sequence[str] = scope.get("subprotocols") or ()  # type: ignore[assignment]  # websocket scopes have it
    return WS_SUBPROTOCOL if WS_SUBPROTOCOL in offered else None


def origin_refusal(scope: Scope, allowed: Iterable[str]) -> AgentError | None:
    """A 403 when the handshake's ``Origin`` is present and not one of ``allowed`` (``"*"`` allows any)."""
    origin = next((value for name, value in scope["headers"] if name == b"origin"), None)
    if origin is None:
        return None  # not a browser: nothing to protect from cross-site use
    text = origin.decode("latin-1").strip().lower()
    for entry in allowed:
        if entry == "*" or entry.lower() == text:
            return None
    return Unauthorized(f"WebSocket origin {text[:100]!r} is not allowed (cors_origins)", status=403)


async def refuse_handshake(
    scope: Scope, send: Send, error: AgentError, headers: Iterable[tuple[str, str]] = ()
) -> None:
    """Refuse a WebSocket handshake before it is accepted: an HTTP problem response, or a close."""
    if _DENIAL_EXTENSION not in (scope.get("extensions") or {}):
        # No HTTP answer possible: a close that says whether trying again later may help.
        code = _TRY_AGAIN_LATER if error.retryable else _POLICY_VIOLATION
        await send({"type": "websocket.close", "code": code, "reason": error.message[:120]})
        return
    body = problem_body(error)
    raw_headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers),
    ]
    if error.retry_after:
        raw_headers.append((b"retry-after", error.retry_after.encode()))
    await send({"type": "websocket.http.response.start", "status": error.status, "headers": raw_headers})
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})


class WebSocketHandshake:
    """Route middleware for a WebSocket route: refuses a handshake from an origin not in ``cors_origins``."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.WEBSOCKET:
            app: Any = scope.get("litestar_app")
            settings = app.state.get("settings") if app is not None else None
            refusal = origin_refusal(scope, settings.cors_origins if settings is not None else ())
            if refusal is not None:
                await refuse_handshake(scope, send, refusal)
                return
        await self.app(scope, receive, send)
