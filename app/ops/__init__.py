"""Running it for real: request ids and structured logs, metrics, readiness, graceful shutdown."""

from __future__ import annotations

__all__ = ()
