"""The Ollama provider: Ollama's own API, ``POST /api/chat`` streaming NDJSON and ``GET /api/tags``.

``open`` sends ``{"model", "messages", "stream": true, "options": {"num_predict", "temperature"?,
"top_p"?}, "think"?}`` and returns once the upstream's headers are in (Ollama sends none while
it loads the model, which the silence limit bounds), raising an ``AgentError`` for anything that
makes the answer impossible: ``{"error": "…"}`` bodies under 4xx/5xx are the same errors as the
OpenAI kind's. The returned stream turns each upstream read into the batch of events it
completes (:mod:`providers.ollama_answer`).
"""

from __future__ import annotations

from typing import Final, Literal

import httpx
import msgspec

from providers.base import ChatMessage, ChatParams, EventStream, ListedModel, ToolSpec
from providers.config import OllamaConfig
from providers.errors import UpstreamProtocolError, error_for_status
from providers.events import Meta
from providers.http import HTTPEventStream, ReadyEventStream, UpstreamHTTP
from providers.ollama_answer import OllamaAnswer
from providers.upstream_errors import decode_json, describe_error_payload

__all__ = ("OllamaProvider",)

_LOADING_HINT: Final = (
    " — Ollama may still be loading the model (the first answer after loading one can take long);"
    " try again, or raise timeout_seconds"
)
_LATEST: Final = ":latest"


class _Options(msgspec.Struct, omit_defaults=True):
    num_predict: int
    temperature: float | None = None
    top_p: float | None = None


class _Function(msgspec.Struct):
    name: str
    arguments: object  # an object: Ollama takes a call's arguments parsed, not as JSON text


class _ToolCall(msgspec.Struct):
    function: _Function


class _Message(msgspec.Struct, omit_defaults=True):
    """A turn in Ollama's shape: content always a string, a tool result names its function."""

    role: str
    content: str
    tool_calls: list[_ToolCall] | None = None
    tool_name: str | None = None


class _UpstreamRequest(msgspec.Struct, omit_defaults=True):
    model: str
    messages: list[_Message]
    stream: Literal[True]  # required, not defaulted: omit_defaults would drop a default True
    options: _Options
    think: bool | str | None = None
    tools: list[ToolSpec] | None = None


def _ollama_messages(messages: list[ChatMessage]) -> list[_Message]:
    """OpenAI-style turns in Ollama's shape (it has no call ids: a tool result carries the call's name)."""
    names: dict[str, str] = {}
    shaped: list[_Message] = []
    for turn in messages:
        calls = None
        if turn.tool_calls:
            calls = []
            for call in turn.tool_calls:
                names[call.id] = call.function.name
                try:
                    arguments: object = msgspec.json.decode(call.function.arguments or "{}")
                except msgspec.DecodeError:
                    arguments = call.function.arguments  # not JSON: pass the text on as it is
                calls.append(_ToolCall(_Function(call.function.name, arguments)))
        tool_name = names.get(turn.tool_call_id) if turn.tool_call_id else None
        shaped.append(_Message(turn.role, turn.content or "", calls, tool_name))
    return shaped


_request_encoder: Final = msgspec.json.Encoder()


class OllamaProvider:
    """Talks to ``{base_url}/api/chat`` and ``{base_url}/api/tags`` over a shared ``httpx.AsyncClient``."""

    __slots__ = ("_http", "_tags_url", "_url", "config")

    def __init__(self, name: str, config: OllamaConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self._http = UpstreamHTTP(name, config, client, slow_hint=_LOADING_HINT)
        base = config.base_url.rstrip("/")
        self._url = httpx.URL(base + "/api/chat")
        self._tags_url = base + "/api/tags"

    @property
    def name(self) -> str:
        return self._http.name

    async def list_models(self) -> list[ListedModel]:
        """``GET {base_url}/api/tags``: the models pulled into this Ollama (``x:latest`` answers as ``x`` too).

        Raises:
            AgentError: the server cannot be reached, refused, or did not answer with a model list.
        """
        http = self._http
        payload = await http.get_json(self._tags_url, within=self.config.listing_timeout_seconds)
        entries = payload.get("models") if isinstance(payload, dict) else None
        if not isinstance(entries, list):
            raise UpstreamProtocolError(
                f"{http.where} answered GET /api/tags with JSON that is not a model list"
                ' ({"models": [{"name": …}, …]}) — does base_url point at Ollama (without /v1)?'
            )
        models: list[ListedModel] = []
        seen: set[str] = set()
        for entry in entries:
            name = (entry.get("name") or entry.get("model")) if isinstance(entry, dict) else None
            if not isinstance(name, str) or not name or name in seen:
                continue
            seen.add(name)
            aliases = (name.removesuffix(_LATEST),) if name.endswith(_LATEST) and len(name) > len(_LATEST) else ()
            models.append(ListedModel(name, aliases=aliases))
        return models

    async def open(self, params: ChatParams) -> EventStream:
        """Start the upstream request and wait for its headers.

        Raises:
            AgentError: the upstream is unreachable, timed out, refused, or did not answer with NDJSON.
        """
        model = params.model or self.config.model
        body = _UpstreamRequest(
            model=model,
            messages=_ollama_messages(params.messages),
            stream=True,
            options=_Options(
                num_predict=params.max_tokens or self.config.max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
            ),
            think=self.config.think,
            tools=params.tools,
        )
        response = await self._http.post(self._url, _request_encoder.encode(body), accept="application/x-ndjson")
        try:
            return await self._accept(response, model)
        except BaseException:
            await response.aclose()
            raise

    async def _accept(self, response: httpx.Response, model: str) -> EventStream:
        http = self._http
        if response.status_code >= 400:
            raise await http.status_error(response, model)
        content_type = response.headers.get("content-type", "").lower()
        meta = Meta(model=model, provider=self.name)
        if "ndjson" in content_type or not content_type:
            return HTTPEventStream(meta, response, OllamaAnswer(http.where, http.secrets))
        if "json" in content_type:
            return self._from_json_body(await http.read_limited(response), meta)
        kind_hint = (
            ' — an OpenAI-compatible server? then use kind = "openai"'
            if "text/event-stream" in content_type
            else " — does base_url point at Ollama (http://host:11434, without /v1)?"
        )
        raise UpstreamProtocolError(
            http.say(f"{http.where} answered with {content_type.split(';')[0]!r}, not NDJSON{kind_hint}")
        )

    def _from_json_body(self, body: bytes, meta: Meta) -> EventStream:
        """A JSON body under HTTP 200: an error object, or a whole answer (a server that ignored ``stream``)."""
        http = self._http
        try:
            payload = decode_json(body)
        except ValueError:
            raise UpstreamProtocolError(f"{http.where} sent a JSON content type but not UTF-8 JSON") from None
        if not isinstance(payload, dict) or ("done" not in payload and payload.get("error") is None):
            raise UpstreamProtocolError(f"{http.where} answered with JSON that is not a chat answer")
        if payload.get("error") is not None:
            status, message = describe_error_payload(payload["error"], default_status=500)
            raise error_for_status(status, http.upstream_says(message, meta.model, 404 if status == 404 else None))
        return ReadyEventStream(meta, OllamaAnswer(http.where, http.secrets).whole(body))
