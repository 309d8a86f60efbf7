"""One streamed Ollama answer (``POST /api/chat``), from NDJSON bytes to events: a small state machine.

Each line is one JSON object: ``{"message": {"content", "thinking"?}, "done": false}`` while the
answer streams, then one with ``"done": true``, ``done_reason`` and the token counts
(``prompt_eval_count``, ``eval_count``), which ends it; ``{"error": "…"}`` instead ends it with
the upstream's message. It is the Ollama kind's :class:`providers.http.StreamParser`, the same
events and error codes as the OpenAI kind's (:mod:`providers.openai_answer`); network reads,
timeouts and the connection belong to :class:`providers.http.HTTPEventStream`.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from providers.errors import (
    StreamInterrupted,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
    error_for_status,
)
from providers.events import ChatEvent, DeltaEvent, ReasoningEvent, Usage, error_event
from providers.http import fit_message
from providers.ndjson import NDJSONLines
from providers.openai_answer import finish_with_calls
from providers.tool_calls import ToolCallFragment, ToolCallTracker, arguments_text
from providers.upstream_errors import clip, describe_error_payload, error_object_of

__all__ = ("OllamaAnswer",)

_FAILED_FINISH: Final = frozenset({"error", "abort"})  # as for the OpenAI kind: the generation broke


# Only the fields we read: msgspec skips the rest (model, created_at, durations, …) without building them.
class _Function(msgspec.Struct, gc=False):
    name: str | None = None
    arguments: Any = None  # an object, as Ollama sends it


class _ToolCall(msgspec.Struct, gc=False):
    function: _Function | None = None
    id: str | None = None


class _Message(msgspec.Struct, gc=False):
    content: str | None = None
    thinking: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Line(msgspec.Struct, gc=False):
    message: _Message | None = None
    done: bool | None = None
    done_reason: str | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    error: Any = None


_line_decoder: Final = msgspec.json.Decoder(_Line)


def _fragment(call: _ToolCall) -> ToolCallFragment:
    function = call.function or _Function()
    # Ollama sends each call whole, several at the same index: its index says nothing, each is a
    # call of its own (told apart by id where it gives one).
    return ToolCallFragment(id=call.id, name=function.name, arguments=arguments_text(function.arguments))


class OllamaAnswer:
    """Feed it the upstream's bytes as they arrive; it returns the events each read completes.

    Attributes:
        finish: the ``done_reason`` of the ``done`` line, once it came.
    """

    __slots__ = ("_clean", "_ended", "_lines", "_said", "_secrets", "_tools", "_where", "finish", "usage")

    def __init__(self, where: str, secrets: tuple[str, ...]) -> None:
        self._lines = NDJSONLines()
        self._where = where
        self._secrets = secrets
        self.finish: str | None = None
        self.usage: Usage | msgspec.UnsetType = msgspec.UNSET
        self._ended = False
        self._clean = False  # the done line came
        self._said = False  # any text (answer, reasoning, a tool call) has come
        self._tools = ToolCallTracker()

    def has_ended(self) -> bool:
        """A terminal event has been returned; nothing more will be."""
        return self._ended

    def ended_cleanly(self) -> bool:
        """The ``done`` line came: what follows is only the end of the body's framing."""
        return self._clean

    def finished(self) -> bool:
        """Always ``False``: the ``done`` line completes and ends the answer at once, nothing trails it."""
        return False

    def feed(self, chunk: bytes) -> list[ChatEvent]:
        """The events that ``chunk`` completes; the last is terminal once :meth:`has_ended`."""
        batch: list[ChatEvent] = []
        for line in self._lines.feed(chunk):
            if self._take(line, batch):
                break
        return batch

    def whole(self, body: bytes) -> list[ChatEvent]:
        """The events of an answer that came as one JSON object (not streamed), ending with the terminal one."""
        batch: list[ChatEvent] = []
        if self._take(body, batch):
            return batch
        return batch + self.end_of_stream()

    def done(self) -> list[ChatEvent]:
        """The last events of a finished answer: its complete tool calls, then ``done``."""
        return finish_with_calls(self._tools, self.finish, self.usage)

    def end_of_stream(self) -> list[ChatEvent]:
        """The last events when the body ended without a ``done`` line (a last line without a newline still counts)."""
        batch: list[ChatEvent] = []
        if self._take(self._lines.rest(), batch):
            return batch
        if not self._said:
            batch.append(
                error_event(
                    StreamInterrupted(
                        f'{self._where} ended the answer before it began (no text, no "done": true): if the prompt'
                        " is long, it may not fit the model's context window — shorten it; otherwise try again"
                    )
                )
            )
        else:
            batch.append(
                error_event(
                    StreamInterrupted(f'{self._where} ended the answer before it finished (no "done": true); try again')
                )
            )
        self._ended = True
        return batch

    def broken(self) -> list[ChatEvent]:
        """The terminal event when the connection failed mid-body."""
        return [error_event(StreamInterrupted(f"the connection to {self._where} broke mid-answer; try again"))]

    def silent(self) -> list[ChatEvent]:
        """The terminal event when the upstream went silent for longer than allowed."""
        return [error_event(UpstreamTimeout(f"{self._where} went silent for longer than the configured timeout"))]

    def _take(self, line: bytes, batch: list[ChatEvent]) -> bool:
        """Add ``line``'s events to ``batch``; ``True`` when it ended the answer."""
        if not line or line.isspace():
            return False
        try:
            parsed = _line_decoder.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            return self._end(batch, self._undecodable(line, exc))
        if parsed.error is not None:
            return self._end(batch, self._failure(parsed.error))
        message = parsed.message
        if message is not None:
            if message.thinking:
                batch.append(ReasoningEvent(message.thinking))
                self._said = True
            if message.content:
                batch.append(DeltaEvent(message.content))
                self._said = True
            if message.tool_calls:  # whole calls, several of them at index 0 (told apart by id, if any)
                batch += self._tools.feed([_fragment(call) for call in message.tool_calls])
                self._said = True
        if not parsed.done:
            return False
        reason = parsed.done_reason
        if reason in _FAILED_FINISH:
            failed = UpstreamUnavailable(f"{self._where} stopped generating (done_reason {reason!r}); try again")
            return self._end(batch, error_event(failed))
        self.finish = reason
        if parsed.prompt_eval_count is not None or parsed.eval_count is not None:
            self.usage = Usage(prompt_tokens=parsed.prompt_eval_count, completion_tokens=parsed.eval_count)
        self._clean = True
        return self._end(batch, *self.done())

    def _end(self, batch: list[ChatEvent], *last: ChatEvent) -> bool:
        self._ended = True
        batch += last
        return True

    def _undecodable(self, raw: bytes, exc: Exception) -> ChatEvent:
        error = error_object_of(raw)
        if error is not None:
            return self._failure(error)
        return error_event(
            UpstreamProtocolError(clip(f"{self._where} sent a line that is not a valid UTF-8 JSON object: {exc}"))
        )

    def _failure(self, payload: object) -> ChatEvent:
        status, message = describe_error_payload(payload, default_status=500)
        text = fit_message(f"{self._where} reported an error: {message}", self._secrets)
        return error_event(error_for_status(status, text))
