"""``GET /`` (the page) and ``/playground/…`` (its script and style sheet), shipped in the package.

Plain HTML, CSS and JavaScript modules with no build step, nothing loaded from another host. The
page is public (the auth middleware leaves ``/`` and ``/playground/`` open); its API calls carry
the key the user types into it, like any client's.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Final

from litestar import MediaType, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.router import Router
from litestar.static_files import create_static_files_router

from app.auth import PLAYGROUND_PREFIX

__all__ = ("PAGE_HEADERS", "STATIC_DIRECTORY", "playground_routes")

STATIC_DIRECTORY: Final = Path(__file__).resolve().parent / "static"

#: The page may load and call only its own origin: model output that slipped into the markup
#: still could not run a script or load an image from elsewhere (it is inserted as text anyway).
PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none';"
        " form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def _page() -> bytes:
    return (STATIC_DIRECTORY / "index.html").read_bytes()


@get("/", include_in_schema=False, sync_to_thread=False, name="playground", opt={"exclude_from_auth": True})
def playground_page() -> Response[bytes]:
    return Response(_page(), media_type=MediaType.HTML, headers=PAGE_HEADERS)


def playground_routes(enabled: bool) -> list[HTTPRouteHandler | Router]:
    """The page and its files when ``playground.enabled``, else nothing (``/`` is then a 404)."""
    if not enabled:
        return []
    assets = create_static_files_router(
        path=PLAYGROUND_PREFIX.rstrip("/"),
        directories=[STATIC_DIRECTORY],
        name="playground-files",
        include_in_schema=False,
        send_as_attachment=False,
        opt={"exclude_from_auth": True},
    )
    return [playground_page, assets]
