"""What crosses the HTTP boundary besides chat events: the problem+json error body."""

from __future__ import annotations

import msgspec

__all__ = ("Problem",)


class Problem(msgspec.Struct):
    """An RFC 9457 problem document, with the contract's ``code``."""

    type: str
    title: str
    status: int
    detail: str
    code: str
