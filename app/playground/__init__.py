"""The playground (CONTRACT §11): a chat page at ``/`` and its files under ``/playground/``."""

from __future__ import annotations

from app.playground.routes import PAGE_HEADERS, STATIC_DIRECTORY, playground_routes

__all__ = ("PAGE_HEADERS", "STATIC_DIRECTORY", "playground_routes")
