"""CORS preflights that Litestar's middleware would refuse with ``text/plain`` answer problem+json."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from litestar.config.cors import CORSConfig
from litestar.constants import DEFAULT_ALLOWED_CORS_HEADERS
from litestar.datastructures import Headers
from litestar.enums import ScopeType

from app.errors import PROBLEM_MEDIA_TYPE, InvalidRequest, problem_body

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

__all__ = ("PreflightRefusals",)

_DEFAULT_HEADERS: Final = frozenset(header.lower() for header in DEFAULT_ALLOWED_CORS_HEADERS)


class PreflightRefusals:
    """Wraps the app ahead of Litestar's CORS handling and answers the preflights it would refuse.

    The checks are Litestar's own (origin, requested method, requested headers), made with the
    same ``CORSConfig``; allowed preflights and every other request pass through untouched.
    """

    __slots__ = ("_app", "_config")

    def __init__(self, app: ASGIApp, config: CORSConfig) -> None:
        self._app = app
        self._config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["method"] == "OPTIONS":
            headers = Headers.from_scope(scope)
            origin = headers.get("origin")
            refusal = self._refusal(origin, headers) if origin else None
            if refusal is not None:
                body = problem_body(InvalidRequest(f"CORS preflight refused: {refusal}"))
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [
                            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
        await self._app(scope, receive, send)

    def _refusal(self, origin: str, headers: Headers) -> str | None:
        config = self._config
        if not config.is_origin_allowed(origin):
            return f"origin {origin!r} is not allowed (cors_origins)"
        method = headers.get("access-control-request-method")
        if method and not config.is_allow_all_methods and method not in config.allow_methods:
            return f"method {method!r} is not allowed"
        requested = [h.strip() for h in headers.get("access-control-request-headers", "").split(",") if h.strip()]
        if requested and not config.is_allow_all_headers:
            allowed = {h.lower() for h in config.allow_headers} | _DEFAULT_HEADERS
            refused = [h for h in requested if h.lower() not in allowed]
            if refused:
                return f"headers {', '.join(refused)} are not allowed"
        return None
