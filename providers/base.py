"""The seam between the service and an LLM server: what a provider takes and what it gives back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Literal, Protocol

import msgspec

from providers.events import ChatEvent

__all__ = ("ChatMessage", "ChatParams", "EventStream", "LLMProvider")


class ChatMessage(msgspec.Struct, gc=False):
    """One turn of the conversation, OpenAI style."""

    role: Literal["system", "user", "assistant"]
    content: str


class ChatParams(msgspec.Struct, kw_only=True):
    """One fully resolved request: which provider, which model, what to send."""

    provider: str
    model: str
    messages: list[ChatMessage]
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None


class EventStream(Protocol):
    """An answer whose upstream has already said yes (its headers are in).

    Iterating yields batches, never empty: all the events that one upstream read produced, so
    a transport can send them in one write. The last batch ends with a ``DoneEvent`` or
    ``ErrorEvent``; a provider may instead raise an ``AgentError``, which ends the stream as
    that error's line.
    """

    def __aiter__(self) -> AsyncIterator[Sequence[ChatEvent]]: ...

    async def aclose(self) -> None:
        """Release the upstream connection; safe to call more than once, and before iterating."""
        ...


class LLMProvider(Protocol):
    """A configured upstream. ``open`` raises an ``AgentError`` if the answer cannot start."""

    @property
    def name(self) -> str: ...

    async def open(self, params: ChatParams) -> EventStream: ...
