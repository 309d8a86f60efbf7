"""The AI SDK's side of a chat: its transport's request body, and ``UIMessage`` lists, to and from our turns.

The body (``DefaultChatTransport``'s) becomes the same :class:`~app.chat.request.ChatRequest` that
``POST /chat`` takes, validated by the same function; nothing here talks to a provider.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final, Literal

import msgspec

from app.chat.request import ChatRequest, ExternalChat, parse_chat_request
from app.config import Limits
from app.errors import InvalidRequest, NotFound
from app.history.models import Message
from app.transports.ui_stream import invalid_arguments
from providers.base import CalledFunction, ChatMessage, ToolTurnCall

__all__ = ("CHAT_ID", "UIChatBody", "UIMessage", "chat_id_of", "chat_request_of", "ui_messages_of")

CHAT_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: The body's fields that are ours (CONTRACT §13), passed to the chat request as they are.
_OUR_FIELDS: Final = ("model", "system", "temperature", "top_p", "max_tokens", "tools", "tool_choice")
_TOOL_STATES_WITH_INPUT: Final = frozenset(("input-available", "output-available", "output-error"))


class UIMessage(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """One message as the SDK keeps it: its parts in order (text, reasoning, tool parts, step markers…)."""

    id: str = ""
    role: Literal["system", "user", "assistant"]
    parts: list[dict[str, Any]]
    metadata: Any = None


class UIChatBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """``POST /api/chat``: ``DefaultChatTransport``'s body, plus our optional fields at the top level."""

    id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,128}$", description="The SDK's chat id.")]
    messages: Annotated[list[UIMessage], msgspec.Meta(min_length=1, description="The chat's messages, oldest first.")]
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: str | None = None  # the SDK's field name
    model: str | None = None
    system: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None


def chat_id_of(value: str) -> str:
    """A chat id from a path.

    Raises:
        NotFound: it is not a chat id (so it names no chat).
    """
    if not CHAT_ID.fullmatch(value):
        raise NotFound("no such chat (chat ids are 1-128 letters, digits, _ or -)")
    return value


def chat_request_of(data: object, limits: Limits, *, persistent: bool) -> tuple[ChatRequest, ExternalChat | None]:
    """The chat request a transport body asks for, and (with persistence on) the stored chat it names.

    With persistence on only the last message is new input: the rest is in storage. Without it
    the messages are the whole conversation, and nothing is stored.

    Raises:
        InvalidRequest: the body is not a chat the service can answer.
    """
    if not isinstance(data, dict):
        raise InvalidRequest('the request body must be a JSON object such as {"id": "…", "messages": […]}')
    try:
        body = msgspec.convert(data, UIChatBody, strict=True)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid request body: {exc}") from None
    ours: dict[str, Any] = {name: data[name] for name in _OUR_FIELDS if data.get(name) is not None}
    if not persistent:
        turns = [msgspec.to_builtins(turn) for turn in _turns_of(body.messages)]
        return parse_chat_request({**ours, "messages": turns, "store": False}, limits), None
    last = body.messages[-1]
    external = ExternalChat(body.id, regenerate=body.trigger == "regenerate-message", answer_id=body.messageId)
    if last.role == "assistant":
        # The client ran the tools of the stored last answer and sends it back with their outputs:
        # the new input is those tool turns (checked against the stored calls before anything is stored).
        results = _new_tool_results(_assistant_turns(last.parts, "messages[-1]"))
        return parse_chat_request({**ours, "messages": results, "store": True}, limits, continues=True), external
    if last.role != "user":
        raise InvalidRequest("with conversation history on, the last message must be a user message or tool results")
    text = _text_of(last.parts, "messages[-1]")
    if not text:
        raise InvalidRequest("messages[-1]: the new user message has no text (no text part, or only empty ones)")
    return parse_chat_request({**ours, "message": text}, limits), external


def _new_tool_results(turns: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """The ``tool`` turns after the last step that called tools: what answers the stored last answer.

    Raises:
        InvalidRequest: that step's calls have no outputs yet.
    """
    last_call = max((n for n, turn in enumerate(turns) if turn.tool_calls), default=-1)
    results = [msgspec.to_builtins(turn) for turn in turns[last_call + 1 :] if turn.role == "tool"]
    if not results:
        raise InvalidRequest(
            "the last message is an assistant message without tool outputs for its last calls:"
            " send a new user message, or the tool outputs (state output-available or output-error)"
        )
    return results


def _text_of(parts: Sequence[Mapping[str, Any]], where: str) -> str:
    texts: list[str] = []
    for number, part in enumerate(parts):
        if part.get("type") == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest(f"{where}.parts[{number}]: a text part needs a string text")
            texts.append(text)
    return "".join(texts)


def _tool_name(part: Mapping[str, Any]) -> str | None:
    """The tool a part calls, if it is a tool part (``dynamic-tool``, or ``tool-<name>``)."""
    kind = part.get("type")
    if kind == "dynamic-tool":
        name = part.get("toolName")
        return name if isinstance(name, str) else ""
    if isinstance(kind, str) and kind.startswith("tool-"):
        return kind[len("tool-") :]
    return None


def _turns_of(messages: Sequence[UIMessage]) -> list[ChatMessage]:
    """The SDK's messages as our turns (an assistant message may hold several steps, see :func:`_assistant_turns`)."""
    turns: list[ChatMessage] = []
    for number, message in enumerate(messages):
        where = f"messages[{number}]"
        if message.role == "assistant":
            turns.extend(_assistant_turns(message.parts, where))
        else:
            text = _text_of(message.parts, where)
            if not text and message.role == "user":
                raise InvalidRequest(f"{where}: a user message needs text (no text part, or only empty ones)")
            turns.append(ChatMessage(message.role, text))
    return turns


def _assistant_turns(parts: Sequence[Mapping[str, Any]], where: str) -> list[ChatMessage]:
    """An assistant message's steps: each an assistant turn followed by the ``tool`` turns answering its calls.

    Text after a step's tool calls is the next step's answer.
    """
    turns: list[ChatMessage] = []
    text: list[str] = []
    calls: list[ToolTurnCall] = []
    results: list[ChatMessage] = []
    for index, part in enumerate(parts):
        name = _tool_name(part)
        if part.get("type") == "text":
            if calls:
                turns.append(ChatMessage("assistant", "".join(text), tool_calls=calls))
                turns.extend(results)
                text, calls, results = [], [], []
            text.append(_text_of([part], where))
        elif name is not None and part.get("state") in _TOOL_STATES_WITH_INPUT:
            call_id = part.get("toolCallId")
            if not isinstance(call_id, str) or not call_id:
                raise InvalidRequest(f"{where}.parts[{index}]: a tool part needs a toolCallId")
            calls.append(
                ToolTurnCall(call_id, CalledFunction(name, msgspec.json.encode(part.get("input", {})).decode()))
            )
            if part.get("state") == "output-available":
                output = part.get("output")
                content = output if isinstance(output, str) else msgspec.json.encode(output).decode()
                results.append(ChatMessage("tool", content, tool_call_id=call_id))
            elif part.get("state") == "output-error":
                results.append(ChatMessage("tool", str(part.get("errorText", "")), tool_call_id=call_id))
    if text or calls:
        turns.append(ChatMessage("assistant", "".join(text), tool_calls=calls or None))
        turns.extend(results)
    return turns


def ui_messages_of(messages: Sequence[tuple[Message, str | None]], conversation_id: str) -> list[dict[str, Any]]:
    """A stored conversation as the SDK's ``UIMessage`` list (for ``useChat({ messages })``).

    An answer still streaming is left out: a client that reloads gets it whole by resuming
    (``GET /api/chat/{id}/stream`` replays it from its start), not as a stored half plus a replay.
    """
    results = {m.tool_call_id: m.content for m, _ in messages if m.role == "tool" and m.tool_call_id is not None}
    out: list[dict[str, Any]] = []
    for message, status in messages:
        if message.role not in ("user", "assistant", "system"):
            continue  # a tool turn's output is part of the assistant message that called it
        if status == "streaming":
            continue
        parts: list[dict[str, Any]] = []
        ui: dict[str, Any] = {"id": str(message.id), "role": message.role, "parts": parts}
        if message.role == "assistant":
            parts.append({"type": "step-start"})
            if message.reasoning:
                parts.append({"type": "reasoning", "text": message.reasoning, "state": "done"})
            if message.content:
                parts.append({"type": "text", "text": message.content, "state": "done"})
            parts.extend(_tool_parts(message.tool_calls or (), results))
            metadata: dict[str, Any] = {"conversation_id": conversation_id}
            if message.model is not None:
                metadata["model"] = message.model
            if message.provider is not None:
                metadata["provider"] = message.provider
            if status is not None:
                metadata["status"] = status
            if message.usage is not None:
                metadata["usage"] = message.usage
            ui["metadata"] = metadata
        else:
            parts.append({"type": "text", "text": message.content})
        out.append(ui)
    return out


def _tool_parts(calls: Sequence[Mapping[str, Any]], results: Mapping[str, str]) -> list[dict[str, Any]]:
    """A stored answer's calls as ``dynamic-tool`` parts: ``output-available`` once a tool turn answered."""
    parts: list[dict[str, Any]] = []
    for call in calls:
        function = call.get("function") or {}
        name = function.get("name", "")
        part: dict[str, Any] = {"type": "dynamic-tool", "toolName": name, "toolCallId": call.get("id", "")}
        try:
            part.update(state="input-available", input=msgspec.json.decode(function.get("arguments") or "{}"))
        except msgspec.DecodeError:
            # As the stream showed it (tool-input-error): the raw text and why it is no input.
            part.update(state="output-error", input=function.get("arguments"), errorText=invalid_arguments(name))
            parts.append(part)
            continue
        output = results.get(call.get("id", ""))
        if output is not None:
            part.update(state="output-available", output=output)
        parts.append(part)
    return parts
