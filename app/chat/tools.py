"""Tool-call requests checked strictly (CONTRACT §12): the tools offered, the choice, and the tool turns.

Everything that would make an upstream answer a 4xx, or worse a confused model, is a 400 here:
at most 128 tools, each a ``function`` with a name of 1–64 letters, digits, ``_`` or ``-``, the
names unique; a ``tool_choice`` that names a function names one of the tools; every ``tool``
turn answers a call an earlier ``assistant`` turn made.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

from app.errors import InvalidRequest
from providers.base import ChatMessage, ToolChoice, ToolSpec

__all__ = ("MAX_TOOLS", "check_tool_turns", "check_tools")

MAX_TOOLS: Final = 128
_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_tools(tools: Sequence[ToolSpec] | None, choice: str | ToolChoice | None) -> None:
    """``tools`` and ``tool_choice`` as §12 allows them.

    Raises:
        InvalidRequest: a tool or the choice is malformed.
    """
    names: set[str] = set()
    for number, tool in enumerate(tools or ()):
        name = tool.function.name
        if not _NAME.fullmatch(name):
            raise InvalidRequest(f"tools[{number}].function.name {name[:80]!r} is not 1-64 letters, digits, _ or -")
        if name in names:
            raise InvalidRequest(f"tools[{number}].function.name {name!r} is offered twice")
        names.add(name)
    if len(names) > MAX_TOOLS:
        raise InvalidRequest(f"at most {MAX_TOOLS} tools may be offered, not {len(names)}")
    if isinstance(choice, ToolChoice):
        if choice.function.name not in names:
            raise InvalidRequest(f"tool_choice names {choice.function.name[:80]!r}, which is not one of tools")
    elif choice == "required" and not names:
        raise InvalidRequest('tool_choice "required" needs tools to choose from')


def check_tool_turns(messages: Sequence[ChatMessage], answered: Iterable[str] = ()) -> None:
    """Each turn has what its role needs, and every ``tool`` turn answers an earlier call.

    Args:
        messages: the turns, oldest first.
        answered: ids of calls made before ``messages`` (a stored conversation's last answer).

    Raises:
        InvalidRequest: a turn is malformed, or a tool turn answers no call.
    """
    calls = set(answered)
    for number, turn in enumerate(messages):
        where = f"messages[{number}]"
        if turn.role == "tool":
            if not turn.tool_call_id:
                raise InvalidRequest(f"{where}: a tool turn needs the tool_call_id of the call it answers")
            if turn.content is None:
                raise InvalidRequest(f"{where}: a tool turn needs content (the tool's result, as text)")
            if turn.tool_calls:
                raise InvalidRequest(f"{where}: a tool turn cannot make tool_calls")
            if turn.tool_call_id not in calls:
                raise InvalidRequest(
                    f"{where}: tool_call_id {turn.tool_call_id[:80]!r} answers no call of an earlier assistant turn"
                )
            continue
        if turn.tool_call_id is not None:
            raise InvalidRequest(f"{where}: only a tool turn carries tool_call_id")
        if turn.role == "assistant" and turn.tool_calls:
            for call in turn.tool_calls:
                if not call.id:
                    raise InvalidRequest(f"{where}: every tool call needs an id")
                if not _NAME.fullmatch(call.function.name):
                    raise InvalidRequest(f"{where}: tool call name {call.function.name[:80]!r} is not a function name")
                calls.add(call.id)
            continue
        if turn.tool_calls:
            raise InvalidRequest(f"{where}: only an assistant turn makes tool_calls")
        if turn.content is None:
            article = "an" if turn.role == "assistant" else "a"
            raise InvalidRequest(f"{where}: {article} {turn.role} turn needs content")
