"""Agent Backend: a Litestar service relaying a local LLM's streamed answer as NDJSON.

Only ``create_app`` lives here, so that ``litestar run`` discovers the factory (``app:create_app``)
without building an app at import time.
"""

from __future__ import annotations

from app.factory import create_app

__all__ = ("create_app",)
