"""One streamed OpenAI-style answer, from SSE bytes to events: a small state machine.

It remembers what the end of an answer needs (``finish_reason``, ``usage``) and knows when the
answer has ended (``[DONE]``, an error, or a failed finish). It is the OpenAI kind's
:class:`providers.http.StreamParser`; network reads, timeouts and the connection belong to
:class:`providers.http.HTTPEventStream`.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from providers.errors import (
    StreamInterrupted,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
    error_for_status,
)
from providers.events import ChatEvent, DeltaEvent, DoneEvent, ReasoningEvent, Usage, error_event
from providers.http import fit_message
from providers.sse import SSEDecoder
from providers.tool_calls import ToolCallFragment, ToolCallTracker, arguments_text
from providers.upstream_errors import clip, decode_json, describe_error_payload, error_object_of

__all__ = ("OpenAIAnswer", "PromptSize", "finish_with_calls")

_FAILED_FINISH: Final = frozenset({"error", "abort"})  # vLLM: the generation broke, not finished


# Only the fields we read: msgspec skips the rest (ids, logprobs, timings, …) without building them.
class _FunctionDelta(msgspec.Struct, gc=False):
    name: str | None = None
    arguments: Any = None  # JSON text as a rule; an object on a few servers


class _ToolCallDelta(msgspec.Struct, gc=False):
    index: int | None = None
    id: str | None = None
    function: _FunctionDelta | None = None


class _Delta(msgspec.Struct, gc=False):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: Any = None  # a string on most servers; an object on a few, which we ignore
    tool_calls: list[_ToolCallDelta] | None = None


class _Choice(msgspec.Struct, gc=False):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct, gc=False):
    choices: list[_Choice] | None = None
    usage: Usage | None = None
    error: Any = None


_chunk_decoder: Final = msgspec.json.Decoder(_Chunk)


def _fragment(call: _ToolCallDelta) -> ToolCallFragment:
    function = call.function
    if function is None:
        return ToolCallFragment(index=call.index, id=call.id)
    return ToolCallFragment(
        index=call.index, id=call.id, name=function.name, arguments=arguments_text(function.arguments)
    )


#: Upstream finish reasons that, with calls made, mean "the answer is its tool calls".
_CALLS_FINISH: Final = frozenset({None, "stop", "tool_calls", "function_call"})


def finish_with_calls(tools: ToolCallTracker, finish: str | None, usage: Usage | msgspec.UnsetType) -> list[ChatEvent]:
    """The last events of a finished answer: one ``tool_call`` per call in index order, then ``done``.

    With calls made, ``finish_reason`` is ``tool_calls`` — also where the upstream said ``stop``
    (Ollama does) — unless it said why the answer stopped short (``length``, a filter).
    """
    if not tools:
        return [DoneEvent(done=True, finish_reason=finish, usage=usage)]
    reason = "tool_calls" if finish in _CALLS_FINISH else finish
    return [*tools.finish(), DoneEvent(done=True, finish_reason=reason, usage=usage)]


class PromptSize(msgspec.Struct, frozen=True, gc=False):
    """How big the prompt was, against the model's context window where the server reports one."""

    chars: int
    context_tokens: int | None = None

    def probably_too_long(self) -> bool:
        """The prompt likely filled the context window (about 4 characters a token)."""
        return self.context_tokens is not None and self.chars / 4 >= 0.8 * self.context_tokens


class OpenAIAnswer:
    """Feed it the upstream's bytes as they arrive; it returns the events each read completes.

    Attributes:
        finish: the ``finish_reason`` once one came (the answer is complete; usage and
            ``[DONE]`` may still follow).
    """

    __slots__ = (
        "_decoder",
        "_ended",
        "_prompt",
        "_said",
        "_saw_done",
        "_secrets",
        "_tools",
        "_where",
        "finish",
        "usage",
    )

    def __init__(self, where: str, secrets: tuple[str, ...], prompt: PromptSize | None = None) -> None:
        self._decoder = SSEDecoder()
        self._where = where
        self._secrets = secrets
        self._prompt = prompt
        self.finish: str | None = None
        self.usage: Usage | msgspec.UnsetType = msgspec.UNSET
        self._ended = False
        self._saw_done = False
        self._said = False  # any text (answer, reasoning, a tool call) has come
        self._tools = ToolCallTracker()

    # Methods rather than attributes: ``feed`` changes them, and a type checker narrows an
    # attribute (or property) it has tested as if no call in between could.
    def has_ended(self) -> bool:
        """A terminal event has been returned; nothing more will be."""
        return self._ended

    def ended_cleanly(self) -> bool:
        """The upstream sent ``[DONE]`` (so the rest of its body is just the end of framing)."""
        return self._saw_done

    def finished(self) -> bool:
        """A ``finish_reason`` came: the answer is complete; usage and ``[DONE]`` may still follow."""
        return self.finish is not None

    def feed(self, chunk: bytes) -> list[ChatEvent]:
        """The events that ``chunk`` completes; the last is terminal once :meth:`has_ended`."""
        batch: list[ChatEvent] = []
        for sse in self._decoder.feed(chunk):
            if sse.event == "error":
                return self._end(batch, self._failure(sse.data))
            if sse.data == b"[DONE]":
                self._saw_done = True
                return self._end(batch, *self.done())
            if sse.event == "ping" or not sse.data:
                continue
            try:
                parsed = _chunk_decoder.decode(sse.data)
            except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
                return self._end(batch, self._undecodable(sse.data, exc))
            if parsed.error is not None:
                return self._end(batch, self._failure(sse.data, parsed.error))
            if parsed.usage is not None:
                self.usage = parsed.usage
            if not parsed.choices:
                continue
            choice = parsed.choices[0]
            delta = choice.delta
            if delta is not None:
                reasoning = delta.reasoning_content or delta.reasoning
                if reasoning and isinstance(reasoning, str):
                    batch.append(ReasoningEvent(reasoning))
                    self._said = True
                if delta.content:
                    batch.append(DeltaEvent(delta.content))
                    self._said = True
                if delta.tool_calls:
                    batch += self._tools.feed([_fragment(call) for call in delta.tool_calls])
                    self._said = True
            if choice.finish_reason is not None:
                if choice.finish_reason in _FAILED_FINISH:
                    failed = UpstreamUnavailable(
                        f"{self._where} stopped generating (finish_reason {choice.finish_reason!r}); try again"
                    )
                    return self._end(batch, error_event(failed))
                self.finish = choice.finish_reason
        return batch

    def done(self) -> list[ChatEvent]:
        """The last events of a finished answer: its complete tool calls, then ``done``."""
        return finish_with_calls(self._tools, self.finish, self.usage)

    def end_of_stream(self) -> list[ChatEvent]:
        """The terminal event when the body ended without ``[DONE]`` (an unfinished event is dropped, as SSE says)."""
        if self.finish is not None:
            return self.done()
        return [self._ended_early()]

    def _ended_early(self) -> ChatEvent:
        prompt = self._prompt
        if not self._said and prompt is not None and prompt.probably_too_long():
            # llama.cpp's servers answer a prompt over the context window with an empty answer:
            # retrying the same prompt fails the same way.
            return error_event(
                UpstreamRejected(
                    f"{self._where} ended the answer without a word: the prompt ({prompt.chars} characters) is"
                    f" probably too long for the model's context window of {prompt.context_tokens} tokens"
                    " — shorten it or start a new conversation"
                )
            )
        if not self._said:
            return error_event(
                StreamInterrupted(
                    f"{self._where} ended the answer before it began (no text, no finish_reason): if the prompt is"
                    " long, it may not fit the model's context window — shorten it; otherwise try again"
                )
            )
        return error_event(
            StreamInterrupted(
                f"{self._where} ended the answer before it finished (no finish_reason or [DONE]); try again"
            )
        )

    def broken(self) -> list[ChatEvent]:
        """The terminal event when the connection failed mid-body."""
        if self.finish is not None:
            return self.done()
        return [error_event(StreamInterrupted(f"the connection to {self._where} broke mid-answer; try again"))]

    def silent(self) -> list[ChatEvent]:
        """The terminal event when the upstream went silent for longer than allowed."""
        if self.finish is not None:
            return self.done()
        return [error_event(UpstreamTimeout(f"{self._where} went silent for longer than the configured timeout"))]

    def _end(self, batch: list[ChatEvent], *last: ChatEvent) -> list[ChatEvent]:
        self._ended = True
        batch += last
        return batch

    def _undecodable(self, raw: bytes, exc: Exception) -> ChatEvent:
        error = error_object_of(raw)
        if error is not None:
            return self._failure(raw, {"error": error})
        return error_event(
            UpstreamProtocolError(clip(f"{self._where} sent a data line that is not a valid UTF-8 JSON chunk: {exc}"))
        )

    def _failure(self, raw: bytes, payload: object = None) -> ChatEvent:
        if payload is None:
            try:
                payload = decode_json(raw)
            except ValueError:
                payload = raw.decode("utf-8", "replace")
        if isinstance(payload, dict) and "error" in payload:
            payload = payload["error"]
        status, message = describe_error_payload(payload, default_status=500)
        text = fit_message(f"{self._where} reported an error: {message}", self._secrets)
        return error_event(error_for_status(status, text))
