"""``GET /health``: liveness, with no upstream and no credentials involved."""

from __future__ import annotations

from litestar import get

__all__ = ("health",)


@get("/health", operation_id="health", tags=["system"], sync_to_thread=False, summary="Liveness check")
def health() -> dict[str, str]:
    """The service is up."""
    return {"status": "ok"}
