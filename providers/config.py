"""Configuration of one named provider, as read from ``providers.<name>`` in the settings.

Each provider kind has its own config type, tagged by ``kind`` (a msgspec tagged union, built
in :mod:`providers.kinds`), so that each kind carries its own defaults (the OpenAI kind points
at LM Studio's ``http://localhost:1234/v1``, the Ollama kind at ``http://localhost:11434``) and its
own options. What every HTTP-speaking kind shares lives in :class:`HTTPProviderConfig`.
"""

from __future__ import annotations

from typing import Literal

import httpx
import msgspec

__all__ = ("HTTPProviderConfig", "OllamaConfig", "OpenAIConfig", "display_url")

#: A model listing may take the connect timeout plus this long, and never more than ``timeout_seconds``.
_LISTING_GRACE_SECONDS = 5.0


def display_url(url: str) -> str:
    """``url`` without user-info, query or fragment (where secrets hide), fit for messages and logs."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid URL>"
    if not (parsed.userinfo or parsed.query or parsed.fragment):
        return url
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))


class HTTPProviderConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=False, tag_field="kind"):
    """What every kind that talks HTTP to an LLM server is configured with; the defaults are the contract's."""

    base_url: str
    api_key: str = ""
    """Sent as ``Authorization: Bearer …``; a secret."""
    model: str = "local-model"
    """The model used when a request names none."""
    max_tokens: int = 512
    connect_timeout_seconds: float = 5.0
    timeout_seconds: float = 120.0
    """The longest silence allowed from the upstream: before its headers and between reads."""
    extra_headers: dict[str, str] = msgspec.field(default_factory=dict)
    """Sent with every upstream request; the values are treated as secrets."""
    models: list[str] = msgspec.field(default_factory=list)
    """Model ids to list (``GET /models``) and route here besides the ones the server lists."""
    fallback: list[str] = msgspec.field(default_factory=list)
    """``"<provider>"`` or ``"<provider>/<model>"``, tried in order when this provider cannot start an answer."""

    @property
    def listing_timeout_seconds(self) -> float:
        """How long a model listing may take: the smaller of the silence limit and the connect limit plus 5 s."""
        return min(self.timeout_seconds, self.connect_timeout_seconds + _LISTING_GRACE_SECONDS)

    @property
    def kind(self) -> str:
        """The ``kind`` this config was written for."""
        tag = self.__struct_config__.tag
        return tag if isinstance(tag, str) else ""

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a message or a log line."""
        values = (self.api_key, *self.extra_headers.values())
        return tuple(value for value in values if value)

    def __repr__(self) -> str:
        # Keep the API key and header values out of tracebacks, logs and debugger output.
        key = "'***'" if self.api_key else "''"
        return (
            f"{type(self).__name__}(kind={self.kind!r}, base_url={display_url(self.base_url)!r}, api_key={key}, "
            f"model={self.model!r}, max_tokens={self.max_tokens}, extra_headers={sorted(self.extra_headers)!r}, "
            f"models={self.models!r}, fallback={self.fallback!r})"
        )


class OpenAIConfig(HTTPProviderConfig, tag="openai"):
    """An OpenAI-compatible server: LM Studio, llama.cpp's server, vLLM, Ollama's ``/v1``."""

    base_url: str = "http://localhost:1234/v1"
    """Requests go to ``{base_url}/chat/completions``; LM Studio's default."""
    stream_usage: bool = True
    """Ask for token usage in the stream (``stream_options.include_usage``)."""


class OllamaConfig(HTTPProviderConfig, tag="ollama"):
    """Ollama's own API (``/api/chat``, ``/api/tags``), not its OpenAI-compatible ``/v1``."""

    base_url: str = "http://localhost:11434"
    """Ollama's address, without ``/v1``: requests go to ``{base_url}/api/chat``."""
    model: str = "llama3.2"
    """The model used when a request names none (``ollama pull llama3.2``)."""
    think: bool | Literal["low", "medium", "high"] | None = None
    """Ask a thinking model to think (``true``, or a level for models that take one) or not (``false``);
    unset: the model's own default."""
