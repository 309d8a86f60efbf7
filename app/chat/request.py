"""What a client asks for, whatever the transport: the chat request, validated strictly, and its upstream parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from app.chat.tools import MAX_TOOLS, check_tool_turns, check_tools
from app.config import Limits
from app.errors import InvalidRequest
from providers.base import ChatMessage, ChatParams, ToolChoice, ToolSpec

__all__ = ("ChatRequest", "ExternalChat", "params_of", "parse_chat_request", "prompt_chars", "stores")


@dataclass(frozen=True, slots=True)
class ExternalChat:
    """A stored conversation named by the client's own id (the AI SDK's chat id) instead of its UUID.

    Created on first use; ``regenerate`` first removes the stored answer ``answer_id`` (else the
    last one) and the user turn it answered, which the request sends again.
    """

    chat_id: str
    regenerate: bool = False
    answer_id: str | None = None


class ChatRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """``POST /chat`` body (and a WebSocket ``chat`` frame). Unknown fields are ignored."""

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
    tools: (
        Annotated[
            list[ToolSpec],
            msgspec.Meta(max_length=MAX_TOOLS, description="Functions the model may call (at most 128, names unique)."),
        ]
        | None
    ) = None
    tool_choice: (
        Annotated[
            Literal["auto", "none", "required"] | ToolChoice,
            msgspec.Meta(description='"auto", "none", "required", or {"type":"function","function":{"name"}}.'),
        ]
        | None
    ) = None
    parallel_tool_calls: bool | None = None
    conversation_id: (
        Annotated[str, msgspec.Meta(description="Continue this stored conversation (its UUID); its turns go first.")]
        | None
    ) = None
    store: (
        Annotated[
            bool,
            msgspec.Meta(
                description="Store this exchange (default: true without messages, false with them);"
                " never sent upstream."
            ),
        ]
        | None
    ) = None


def parse_chat_request(data: Any, limits: Limits, *, continues: bool = False) -> ChatRequest:
    """Validate a decoded JSON body against the contract and the configured limits.

    ``continues``: the request continues a stored conversation named outside the body (the AI
    SDK's chat id), so its ``messages`` follow the rules of ``conversation_id``.

    Raises:
        InvalidRequest: the body is not a chat request the service can answer.
    """
    if not isinstance(data, dict):
        raise InvalidRequest('the request body must be a JSON object such as {"message": "Hello"}')
    try:
        # strict: "1.5" is not a number and 1 is not a string, whatever a lax parser would say.
        request = msgspec.convert(data, ChatRequest, strict=True)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid request body: {exc}") from None
    if request.message is not None and len(request.message) > limits.max_message_chars:
        raise InvalidRequest(f"message is longer than the limit of {limits.max_message_chars} characters")
    continued = continues or request.conversation_id is not None
    if continued and request.messages is not None and not _tool_results_only(request.messages):
        raise InvalidRequest(
            '"messages" with "conversation_id" may hold only tool turns answering the stored last'
            ' assistant turn\'s tool_calls: the stored conversation is the history; send the new turn as "message"'
        )
    if request.message is None and not request.messages:
        raise InvalidRequest('nothing to answer: send "message" (or a non-empty "messages" list)')
    check_tools(request.tools, request.tool_choice)
    if not continued:
        check_tool_turns(request.messages or ())
    # With conversation_id the tool turns answer stored calls: the history feature checks them.
    prompt = prompt_chars(request)
    if prompt > limits.max_prompt_chars:
        raise InvalidRequest(
            f"the prompt (system, messages and message together) is {prompt} characters long,"
            f" over the limit of {limits.max_prompt_chars} (limits.max_prompt_chars)"
        )
    return request


def _tool_results_only(messages: list[ChatMessage]) -> bool:
    return bool(messages) and all(turn.role == "tool" for turn in messages)


def stores(request: ChatRequest) -> bool:
    """Whether the exchange is stored: ``store`` as given, else true unless a stateless client sent ``messages``.

    Tool results sent with ``conversation_id`` continue a stored conversation, so they are stored too.
    """
    if request.store is not None:
        return request.store
    return request.messages is None or request.conversation_id is not None


def prompt_chars(request: ChatRequest) -> int:
    """Characters of the whole prompt: ``system``, every ``content`` of ``messages``, and ``message``."""
    total = len(request.system or "") + len(request.message or "")
    return total + sum(len(turn.content or "") for turn in request.messages or ())


def params_of(request: ChatRequest) -> ChatParams:
    """What to send upstream for ``request``: the system prompt first, the earlier turns, then the new one.

    ``model`` is left to the routing (:mod:`app.chat.routing`), which knows which provider answers.
    """
    messages: list[ChatMessage] = []
    if request.system is not None:
        messages.append(ChatMessage("system", request.system))
    if request.messages:
        messages.extend(request.messages)
    if request.message is not None:
        messages.append(ChatMessage("user", request.message))
    return ChatParams(
        messages=messages,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        tools=request.tools,
        tool_choice=request.tool_choice,
        parallel_tool_calls=request.parallel_tool_calls,
    )
