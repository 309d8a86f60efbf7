"""The seam between the service and an LLM server: what a provider takes and what it gives back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Literal, Protocol

import msgspec

from providers.events import ChatEvent, Meta

__all__ = (
    "CalledFunction",
    "ChatMessage",
    "ChatParams",
    "EventStream",
    "FunctionSpec",
    "LLMProvider",
    "ListedModel",
    "NamedFunction",
    "ToolChoice",
    "ToolSpec",
    "ToolTurnCall",
)


class CalledFunction(msgspec.Struct, gc=False):
    """The function a call names, and its arguments as the model wrote them (JSON text)."""

    name: str
    arguments: str


class ToolTurnCall(msgspec.Struct, gc=False):
    """A tool call as an ``assistant`` turn carries it back (OpenAI's shape)."""

    id: str
    function: CalledFunction
    type: Literal["function"] = "function"


class ChatMessage(msgspec.Struct, omit_defaults=True, gc=False):
    """One turn of the conversation, OpenAI style.

    ``content`` is ``None`` only for an ``assistant`` turn that made ``tool_calls``; a ``tool``
    turn answers one of those by ``tool_call_id``. Left-out fields are left out upstream too.
    """

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ToolTurnCall] | None = None
    tool_call_id: str | None = None


class FunctionSpec(msgspec.Struct, omit_defaults=True, gc=False):
    """A function the model may call: its name, what it does, and a JSON Schema of its arguments."""

    name: str
    description: str | None = None
    parameters: dict[str, object] | None = None


class ToolSpec(msgspec.Struct, gc=False):
    """A tool offered to the model (``{"type":"function","function":{…}}``)."""

    function: FunctionSpec
    type: Literal["function"] = "function"


class NamedFunction(msgspec.Struct, gc=False):
    name: str


class ToolChoice(msgspec.Struct, gc=False):
    """``tool_choice`` naming one function (``{"type":"function","function":{"name"}}``)."""

    function: NamedFunction
    type: Literal["function"] = "function"


class ChatParams(msgspec.Struct, kw_only=True):
    """What to ask an upstream, independent of which provider answers (so a fallback can take it as it is).

    ``model`` and ``max_tokens`` left ``None`` mean the answering provider's own defaults.
    """

    messages: list[ChatMessage]
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["auto", "none", "required"] | ToolChoice | None = None
    parallel_tool_calls: bool | None = None


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
