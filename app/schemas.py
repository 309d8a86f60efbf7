"""What crosses the HTTP boundary: the chat request body and the problem+json error body."""

from __future__ import annotations

from typing import Annotated

import msgspec

from providers.base import ChatMessage

__all__ = ("ChatRequest", "Problem")


class ChatRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """``POST /chat`` body. Unknown fields are ignored; ``message`` or ``messages`` is required."""

    message: Annotated[str, msgspec.Meta(min_length=1, description="The new user turn.")] | None = None
    messages: Annotated[list[ChatMessage], msgspec.Meta(description="Earlier turns, oldest first.")] | None = None
    system: Annotated[str, msgspec.Meta(description="System prompt, sent first.")] | None = None
    model: Annotated[str, msgspec.Meta(min_length=1, description='"<model>" or "<provider>/<model>".')] | None = None
    # The ranges are in the descriptions too: Litestar 2.25 leaves a "minimum" of 0 out of the
    # OpenAPI document (it tests the bound for truth).
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2, description="0 to 2; passed upstream.")] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1, description="0 to 1; passed upstream.")] | None = None
    max_tokens: (
        Annotated[int, msgspec.Meta(ge=1, description="At least 1; default: the provider's max_tokens.")] | None
    ) = None


class Problem(msgspec.Struct):
    """An RFC 9457 problem document, with the contract's ``code``."""

    type: str
    title: str
    status: int
    detail: str
    code: str
