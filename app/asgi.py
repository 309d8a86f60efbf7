"""A module-level ASGI app, for servers that take ``module:attribute`` (``uvicorn app.asgi:app``)."""

from __future__ import annotations

from app.factory import create_app

__all__ = ("app",)

app = create_app()
