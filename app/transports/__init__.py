"""Transports: each encodes the chat pipeline's events for one protocol and tells it when its client leaves."""

from __future__ import annotations

__all__ = ()
