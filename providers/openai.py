"""The OpenAI-compatible provider: LM Studio, llama.cpp's server, Ollama's ``/v1``, vLLM and the like.

``open`` sends ``POST {base_url}/chat/completions`` with ``stream: true`` and returns once the
upstream's headers are in, raising an ``AgentError`` for anything that makes the answer
impossible (so the service can still answer with an HTTP error). The returned stream turns
each upstream read into the batch of events it completes (:mod:`providers.openai_answer`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

import httpx
import msgspec

from providers.base import ChatMessage, ChatParams, EventStream, ListedModel, ToolChoice, ToolSpec
from providers.config import OpenAIConfig
from providers.errors import UpstreamProtocolError, error_for_status
from providers.events import ChatEvent, DeltaEvent, Meta, ReasoningEvent, Usage
from providers.http import HTTPEventStream, ReadyEventStream, UpstreamHTTP
from providers.openai_answer import OpenAIAnswer, PromptSize, finish_with_calls
from providers.tool_calls import ToolCallFragment, ToolCallTracker, arguments_text
from providers.upstream_errors import decode_json, describe_error_payload

__all__ = ("OpenAICompatibleProvider",)


class _StreamOptions(msgspec.Struct):
    include_usage: bool


class _UpstreamRequest(msgspec.Struct, omit_defaults=True):
    model: str
    messages: list[ChatMessage]
    max_tokens: int
    stream: Literal[True]  # required, not defaulted: omit_defaults would drop a default True
    stream_options: _StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: str | ToolChoice | None = None
    parallel_tool_calls: bool | None = None


_request_encoder: Final = msgspec.json.Encoder()
_ASK_FOR_USAGE: Final = _StreamOptions(include_usage=True)


class OpenAICompatibleProvider:
    """Talks to ``{base_url}/chat/completions`` over a shared ``httpx.AsyncClient``."""

    __slots__ = ("_context_windows", "_http", "_models_url", "_url", "config")

    def __init__(self, name: str, config: OpenAIConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self._http = UpstreamHTTP(name, config, client)
        self._url = httpx.URL(config.base_url.rstrip("/") + "/chat/completions")
        self._models_url = config.base_url.rstrip("/") + "/models"
        # Context windows (tokens) by model id, where the server's model list reports them; the
        # last listing replaces the whole map.
        self._context_windows: dict[str, int] = {}

    @property
    def name(self) -> str:
        return self._http.name

    async def list_models(self) -> list[ListedModel]:
        """``GET {base_url}/models``: the ids, and the context windows where the server reports them.

        Raises:
            AgentError: the server cannot be reached, refused, or did not answer with a model list.
        """
        http = self._http
        payload = await http.get_json(self._models_url, within=self.config.listing_timeout_seconds)
        models = _listed_models(payload)
        if models is None:
            raise UpstreamProtocolError(
                f"{http.where} answered GET /models with JSON that is not a model list"
                ' ({"data": [{"id": …}, …]}) — does base_url point at an OpenAI-compatible API?'
            )
        self._context_windows = {m.id: m.context_window for m in models if m.context_window is not None}
        return models

    async def open(self, params: ChatParams) -> EventStream:
        """Start the upstream request and wait for its headers.

        Raises:
            AgentError: the upstream is unreachable, timed out, refused, or did not answer
                with an event stream.
        """
        model = params.model or self.config.model
        body = _UpstreamRequest(
            model=model,
            messages=_with_content(params.messages),
            max_tokens=params.max_tokens or self.config.max_tokens,
            stream=True,
            stream_options=_ASK_FOR_USAGE if self.config.stream_usage else None,
            temperature=params.temperature,
            top_p=params.top_p,
            tools=params.tools,
            tool_choice=params.tool_choice,
            parallel_tool_calls=params.parallel_tool_calls,
        )
        response = await self._http.post(self._url, _request_encoder.encode(body), accept="text/event-stream")
        try:
            return await self._accept(response, model, params)
        except BaseException:
            await response.aclose()
            raise

    async def _accept(self, response: httpx.Response, model: str, params: ChatParams) -> EventStream:
        http = self._http
        if response.status_code >= 400:
            raise await http.status_error(response, model)
        content_type = response.headers.get("content-type", "").lower()
        if "json" in content_type:
            return self._from_json_body(await http.read_limited(response), model)
        if content_type and "text/event-stream" not in content_type:
            raise UpstreamProtocolError(
                http.say(
                    f"{http.where} answered with {content_type.split(';')[0]!r}, not an event stream"
                    " — does base_url point at an OpenAI-compatible API (usually ending in /v1)?"
                )
            )
        prompt = PromptSize(sum(len(m.content or "") for m in params.messages), self._context_windows.get(model))
        return HTTPEventStream(
            Meta(model=model, provider=self.name), response, OpenAIAnswer(http.where, http.secrets, prompt)
        )

    def _from_json_body(self, body: bytes, model: str) -> EventStream:
        """A JSON body under HTTP 200: an error object (LM Studio) or a non-streamed completion."""
        http = self._http
        try:
            payload = decode_json(body)
        except ValueError:
            raise UpstreamProtocolError(f"{http.where} sent a JSON content type but not UTF-8 JSON") from None
        if isinstance(payload, dict) and payload.get("error") is not None:
            status, message = describe_error_payload(payload["error"], default_status=400)
            raise error_for_status(status, http.upstream_says(message, model, 404 if status == 404 else None))
        events = _events_of_completion(payload)
        if events is None:
            raise UpstreamProtocolError(f"{http.where} answered with JSON that is not a chat completion")
        reported = payload.get("model") if isinstance(payload, dict) else None
        meta = Meta(model=reported if isinstance(reported, str) and reported else model, provider=self.name)
        return ReadyEventStream(meta, events)


def _with_content(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Turns as servers take them: an assistant turn that only made tool calls gets ``content: ""``.

    OpenAI accepts a missing or null content there; llama-cpp-python's server does not (its chat
    templates read the content of every turn), and an empty string suits them all.
    """
    if all(turn.content is not None for turn in messages):
        return messages
    return [turn if turn.content is not None else msgspec.structs.replace(turn, content="") for turn in messages]


def _events_of_completion(payload: object) -> list[ChatEvent] | None:
    """Events for a server that ignored ``stream: true`` and sent the whole completion."""
    try:
        choice = payload["choices"][0]  # type: ignore[index]
        message = choice["message"]
        content = message.get("content") or ""
        reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
        finish = choice.get("finish_reason")
        usage_raw = payload.get("usage")  # type: ignore[attr-defined]
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    if not isinstance(content, str) or not isinstance(finish, str | None):
        return None
    events: list[ChatEvent] = []
    if isinstance(reasoning, str) and reasoning:
        events.append(ReasoningEvent(reasoning))
    if content:
        events.append(DeltaEvent(content))
    tools = ToolCallTracker()
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            return None
        name, call_id = function.get("name"), call.get("id")
        events += tools.feed(
            [
                ToolCallFragment(
                    id=call_id if isinstance(call_id, str) else None,
                    name=name if isinstance(name, str) else None,
                    arguments=arguments_text(function.get("arguments")),
                )
            ]
        )
    try:
        usage = msgspec.convert(usage_raw, Usage) if usage_raw is not None else msgspec.UNSET
    except msgspec.ValidationError:
        usage = msgspec.UNSET
    return events + finish_with_calls(tools, finish, usage)


#: Where servers report a model's context window in ``/v1/models``, the window a request meets first:
#: vLLM's ``max_model_len``, llama.cpp's ``meta.n_ctx`` (where it reports the running context), LM
#: Studio's loaded and maximum context, and last llama.cpp's ``meta.n_ctx_train`` (the model's own maximum).
_WINDOW_KEYS: Final = (
    ("max_model_len",),
    ("meta", "n_ctx"),
    ("loaded_context_length",),
    ("context_length",),
    ("max_context_length",),
    ("meta", "n_ctx_train"),
)


def _listed_models(payload: object) -> list[ListedModel] | None:
    """The models of an OpenAI-style list (``data``; llama.cpp's ``models`` too), or ``None`` if it is not one."""
    if not isinstance(payload, dict):
        return None
    entries = payload.get("data")
    key = "id"
    if entries is None and isinstance(payload.get("models"), list):
        entries, key = payload["models"], "model"
    if not isinstance(entries, list):
        return None
    models: list[ListedModel] = []
    seen: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        model_id = entry.get(key) or entry.get("id") or entry.get("name")
        if not isinstance(model_id, str) or not model_id or model_id in seen:
            continue
        seen.add(model_id)
        models.append(ListedModel(model_id, _context_window(entry)))
    return models


def _context_window(entry: Mapping[str, Any]) -> int | None:
    for path in _WINDOW_KEYS:
        value: Any = entry
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
