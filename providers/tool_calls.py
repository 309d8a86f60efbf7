"""Tool calls as an answer streams them: fragments in, in whatever shape a server sends, events out.

Real servers disagree on how a call's fragments are labelled: OpenAI and llama.cpp (``--jinja``)
send an ``id`` and ``name`` on a call's first fragment and only ``index`` + ``arguments`` after;
vLLM repeats ``id: ""``; LM Studio sends ``name: ""`` on argument fragments; Google leaves out
``index``; Ollama sends whole calls in one chunk, several of them sharing index 0 with distinct
ids, and its arguments as a JSON object. A fragment belongs to the call with its non-empty ``id``,
else to the call last seen at its ``index``, else (neither) to the call before it; a new non-empty
id is a new call. Our ``index`` is the order in which calls first appear.

Calls are finalised only when the answer ends (:meth:`ToolCallTracker.finish`), never because the
arguments so far happen to parse as JSON: fragments are joined as text, as the model wrote them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Final

import msgspec

from providers.events import ToolCall, ToolCallDelta, ToolCallDeltaEvent, ToolCallEvent

__all__ = ("ToolCallFragment", "ToolCallTracker", "arguments_text", "new_call_id")

_encoder: Final = msgspec.json.Encoder()


def new_call_id() -> str:
    """An id for a call whose upstream gave none (OpenAI's shape: ``call_`` and 24 characters)."""
    return "call_" + secrets.token_hex(12)


def arguments_text(arguments: object) -> str:
    """A call's arguments as JSON text: a string as it is, anything else (Ollama's object) encoded compactly."""
    if arguments is None:
        return ""
    if isinstance(arguments, str):
        return arguments
    return _encoder.encode(arguments).decode()


@dataclass(frozen=True, slots=True)
class ToolCallFragment:
    """One piece of a call as an upstream chunk carries it; empty strings count as absent."""

    index: int | None = None
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class _Call:
    index: int
    id: str
    name: str = ""
    announced: bool = False  # its first delta (with id and name) has gone out
    pending: list[str] = field(default_factory=list)  # arguments held until the name is known
    parts: list[str] = field(default_factory=list)


class ToolCallTracker:
    """The calls of one answer: :meth:`feed` each chunk's fragments, :meth:`finish` at the end."""

    __slots__ = ("_by_id", "_by_index", "_calls", "_last")

    def __init__(self) -> None:
        self._calls: list[_Call] = []
        self._by_id: dict[str, _Call] = {}
        self._by_index: dict[int, _Call] = {}
        self._last: _Call | None = None

    def __bool__(self) -> bool:
        return bool(self._calls)

    def feed(self, fragments: list[ToolCallFragment]) -> list[ToolCallDeltaEvent]:
        """The ``tool_call_delta`` events for one chunk's fragments, in order."""
        events: list[ToolCallDeltaEvent] = []
        for fragment in fragments:
            call = self._call_for(fragment)
            if fragment.name and not call.name:
                call.name = fragment.name
            if fragment.arguments:
                call.parts.append(fragment.arguments)
            if call.announced:
                events.append(ToolCallDeltaEvent(ToolCallDelta(index=call.index, arguments=fragment.arguments)))
            elif call.name:
                # The first delta carries the id and the name, and whatever arguments waited for the name.
                call.announced = True
                held = "".join(call.pending) + fragment.arguments
                call.pending.clear()
                delta = ToolCallDelta(index=call.index, id=call.id, name=call.name, arguments=held)
                events.append(ToolCallDeltaEvent(delta))
            elif fragment.arguments:
                call.pending.append(fragment.arguments)
        return events

    def finish(self) -> list[ToolCallEvent]:
        """One complete ``tool_call`` per call, in index order (the answer has ended)."""
        return [
            ToolCallEvent(ToolCall(index=call.index, id=call.id, name=call.name, arguments="".join(call.parts)))
            for call in self._calls
        ]

    def _call_for(self, fragment: ToolCallFragment) -> _Call:
        if fragment.id:
            call = self._by_id.get(fragment.id)
            if call is None:
                call = self._new(fragment.id, fragment.index)
            elif fragment.index is not None:
                self._by_index[fragment.index] = call
        elif fragment.index is not None and fragment.index in self._by_index:
            call = self._by_index[fragment.index]
        elif fragment.index is None and self._last is not None and not fragment.name:
            call = self._last  # no id, no index: arguments of the call before (Google's shape)
        else:
            call = self._new(None, fragment.index)
        self._last = call
        return call

    def _new(self, call_id: str | None, upstream_index: int | None) -> _Call:
        call = _Call(index=len(self._calls), id=call_id or new_call_id())
        self._calls.append(call)
        self._by_id[call.id] = call
        if upstream_index is not None:
            self._by_index[upstream_index] = call
        return call
