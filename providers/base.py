"""The seam between the service and an LLM server: what a provider takes and what it gives back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Literal, Protocol

import msgspec

from providers.events import ChatEvent, Meta

__all__ = ("ChatMessage", "ChatParams", "EventStream", "LLMProvider", "ListedModel")


class ChatMessage(msgspec.Struct, gc=False):
    """One turn of the conversation, OpenAI style."""

    role: Literal["system", "user", "assistant"]
    content: str


class ChatParams(msgspec.Struct, kw_only=True):
    """What to ask an upstream, independent of which provider answers (so a fallback can take it as it is).

    ``model`` and ``max_tokens`` left ``None`` mean the answering provider's own defaults.
    """

    messages: list[ChatMessage]
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None


class ListedModel(msgspec.Struct, frozen=True, gc=False):
    """One model a server says it serves.

    ``aliases`` are other ids the server answers for the same model (Ollama's ``llama3`` for
    ``llama3:latest``), so that a request naming one of them is routed here too.
    """

    id: str
    context_window: int | None = None
    """Tokens, where the listing reports them."""
    aliases: tuple[str, ...] = ()


class EventStream(Protocol):
    """An answer whose upstream has already said yes (its headers are in).

    ``meta`` says who answers: the provider's name and the model it was asked for (or the one
    it reported, where it reports one before the first event). Iterating yields batches, never
    empty: all the events that one upstream read produced, so a transport can send them in one
    write. The last batch ends with a ``DoneEvent`` or ``ErrorEvent``; a provider may instead
    raise an ``AgentError``. Whoever opened the stream closes it with :meth:`aclose`, once.
    """

    @property
    def meta(self) -> Meta: ...

    def __aiter__(self) -> AsyncIterator[Sequence[ChatEvent]]: ...

    async def aclose(self) -> None:
        """Release the upstream connection; safe before iterating, during it and after it."""
        ...


class LLMProvider(Protocol):
    """A configured upstream. ``open`` raises an ``AgentError`` if the answer cannot start."""

    @property
    def name(self) -> str: ...

    async def open(self, params: ChatParams) -> EventStream: ...

    async def list_models(self) -> Sequence[ListedModel]:
        """The models the server says it serves, in its order.

        Raises:
            AgentError: the server cannot be reached, refused, or answered something that is not a listing.
        """
        ...
