"""Each provider kind's wire format, behind one interface, so that one table of contract cases runs against every kind.

A :class:`Wire` knows how its kind's server says things (a piece of text, reasoning, the end of
an answer with usage, an error line, an error body, a model list), where its routes are, and
how its provider is built; the shared suite (``test_provider_contract.py``) only says what
must come out.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any, ClassVar

import httpx

from providers import (
    ChatMessage,
    LLMProvider,
    OllamaConfig,
    OllamaProvider,
    OpenAICompatibleProvider,
    OpenAIConfig,
    Usage,
)

SECRET = "sk-test-secret-0123456789"


def chunk(content: str | None = None, *, finish: str | None = None, **delta: Any) -> bytes:
    """One OpenAI streaming chunk as an SSE event."""
    if content is not None:
        delta["content"] = content
    body = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


ROLE = chunk(role="assistant")
DONE = b"data: [DONE]\n\n"


def ndjson_line(obj: object) -> bytes:
    """One Ollama NDJSON line, as Ollama's encoder writes it (non-ASCII kept as it is)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def ollama_message(content: str = "", thinking: str | None = None) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking is not None:
        message["thinking"] = thinking
    return ndjson_line({"model": "m", "created_at": "2025-01-01T00:00:00.000Z", "message": message, "done": False})


def ollama_done(reason: str | None = "stop", usage: tuple[int, int] | None = None, content: str = "") -> bytes:
    line: dict[str, Any] = {
        "model": "m",
        "created_at": "2025-01-01T00:00:01.000Z",
        "message": {"role": "assistant", "content": content},
        "done": True,
    }
    if reason is not None:
        line["done_reason"] = reason
    line.update(total_duration=123, load_duration=4)
    if usage is not None:
        line.update(prompt_eval_count=usage[0], prompt_eval_duration=5, eval_count=usage[1], eval_duration=6)
    return ndjson_line(line)


def streamed(chunks: Iterable[bytes], content_type: str, status: int = 200) -> Any:
    """A respx side effect: a fresh streamed response per call, one body read per chunk."""
    parts = list(chunks)

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    return lambda request: httpx.Response(status, headers={"content-type": content_type}, content=body())


class Wire:
    """How one kind's server speaks; see the module docstring."""

    kind: ClassVar[str]
    base: ClassVar[str]
    chat_path: ClassVar[str]
    list_path: ClassVar[str]
    content_type: ClassVar[str]
    #: What a server sends before the first piece of text (OpenAI's role-only chunk).
    start: ClassVar[bytes]
    #: A line that is not the protocol's JSON.
    broken_json: ClassVar[bytes]

    @property
    def chat_url(self) -> str:
        return self.base + self.chat_path

    @property
    def list_url(self) -> str:
        return self.base + self.list_path

    @property
    def where(self) -> str:
        return f"provider 'local' at {self.base}"

    def reply(self, chunks: Iterable[bytes], status: int = 200) -> Any:
        return streamed(chunks, self.content_type, status)

    def provider(self, client: httpx.AsyncClient, **config: Any) -> LLMProvider:
        raise NotImplementedError

    def text(self, content: str) -> bytes:
        raise NotImplementedError

    def reasoning(self, text: str) -> bytes:
        raise NotImplementedError

    def end(self, reason: str = "stop", usage: tuple[int, int] | None = None) -> list[bytes]:
        """The end of an answer: its finish reason, the usage (when given), and whatever marks the end."""
        raise NotImplementedError

    def usage(self, prompt: int, completion: int) -> Usage:
        """The usage the ``done`` event carries for :meth:`end`'s ``usage``."""
        raise NotImplementedError

    def error_line(self, payload: object) -> bytes:
        """An in-stream error: ``{"error": payload}`` in the kind's framing."""
        raise NotImplementedError

    def error_body(self, message: str) -> dict[str, Any]:
        """An HTTP error body as the kind's server writes one."""
        raise NotImplementedError

    def whole(self, content: str, reason: str, usage: tuple[int, int]) -> dict[str, Any]:
        """A whole (not streamed) answer, as a server that ignores ``stream: true`` sends it."""
        raise NotImplementedError

    def listing(self, ids: Iterable[str]) -> dict[str, Any]:
        raise NotImplementedError

    def request_body(
        self, model: str, messages: list[dict[str, str]], max_tokens: int, **sampling: float
    ) -> dict[str, Any]:
        """What the provider sends upstream for these parameters."""
        raise NotImplementedError


class OpenAIWire(Wire):
    kind = "openai"
    base = "http://upstream.test/v1"
    chat_path = "/chat/completions"
    list_path = "/models"
    content_type = "text/event-stream"
    start = ROLE
    broken_json = b"data: {not json\n\n"

    def provider(self, client: httpx.AsyncClient, **config: Any) -> OpenAICompatibleProvider:
        return OpenAICompatibleProvider("local", OpenAIConfig(**{"base_url": self.base, **config}), client)

    def text(self, content: str) -> bytes:
        return chunk(content)

    def reasoning(self, text: str) -> bytes:
        return chunk(reasoning_content=text)

    def end(self, reason: str = "stop", usage: tuple[int, int] | None = None) -> list[bytes]:
        tail = [chunk(finish=reason)]
        if usage is not None:
            counts = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
            tail.append(b"data: " + json.dumps({"choices": [], "usage": counts}).encode() + b"\n\n")
        return [*tail, DONE]

    def usage(self, prompt: int, completion: int) -> Usage:
        return Usage(prompt, completion, prompt + completion)

    def error_line(self, payload: object) -> bytes:
        return b"data: " + json.dumps({"error": payload}).encode() + b"\n\n"

    def error_body(self, message: str) -> dict[str, Any]:
        return {"error": {"message": message}}

    def whole(self, content: str, reason: str, usage: tuple[int, int]) -> dict[str, Any]:
        return {
            "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": reason}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]},
        }

    def listing(self, ids: Iterable[str]) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": i, "object": "model", "owned_by": "me"} for i in ids]}

    def request_body(
        self, model: str, messages: list[dict[str, str]], max_tokens: int, **sampling: float
    ) -> dict[str, Any]:
        return {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            **sampling,
        }


class OllamaWire(Wire):
    kind = "ollama"
    base = "http://ollama.test:11434"
    chat_path = "/api/chat"
    list_path = "/api/tags"
    content_type = "application/x-ndjson"
    start = b""
    broken_json = b"{not json\n"

    def provider(self, client: httpx.AsyncClient, **config: Any) -> OllamaProvider:
        return OllamaProvider("local", OllamaConfig(**{"base_url": self.base, **config}), client)

    def text(self, content: str) -> bytes:
        return ollama_message(content)

    def reasoning(self, text: str) -> bytes:
        return ollama_message(thinking=text)

    def end(self, reason: str = "stop", usage: tuple[int, int] | None = None) -> list[bytes]:
        return [ollama_done(reason, usage)]

    def usage(self, prompt: int, completion: int) -> Usage:
        return Usage(prompt, completion)

    def error_line(self, payload: object) -> bytes:
        return ndjson_line({"error": payload})

    def error_body(self, message: str) -> dict[str, Any]:
        return {"error": message}

    def whole(self, content: str, reason: str, usage: tuple[int, int]) -> dict[str, Any]:
        return json.loads(ollama_done(reason, usage, content))  # type: ignore[no-any-return]

    def listing(self, ids: Iterable[str]) -> dict[str, Any]:
        return {
            "models": [
                {"name": i, "model": i, "modified_at": "2025-01-01T00:00:00Z", "size": 1, "digest": "d", "details": {}}
                for i in ids
            ]
        }

    def request_body(
        self, model: str, messages: list[dict[str, str]], max_tokens: int, **sampling: float
    ) -> dict[str, Any]:
        return {
            "model": model,
            "messages": messages,
            "stream": True,
            "options": {"num_predict": max_tokens, **sampling},
        }


WIRES: dict[str, Wire] = {"openai": OpenAIWire(), "ollama": OllamaWire()}


def message(role: str, content: str) -> ChatMessage:
    return ChatMessage(role, content)  # type: ignore[arg-type]
