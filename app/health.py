"""``GET /health`` (and ``HEAD``): liveness, with no upstream and no credentials involved."""

from __future__ import annotations

from litestar import get, head

__all__ = ("health", "health_head")


@get("/health", operation_id="health", tags=["system"], sync_to_thread=False, summary="Liveness check")
def health() -> dict[str, str]:
    """The service is up."""
    return {"status": "ok"}


@head("/health", operation_id="healthHead", tags=["system"], sync_to_thread=False, summary="Liveness check")
def health_head() -> None:
    """The service is up (no body)."""
