"""Configuration of one named provider, as read from ``providers.<name>`` in the settings.

Each provider kind has its own config type, tagged by ``kind`` (a msgspec tagged union, built
in :mod:`providers.kinds`), so that each kind carries its own defaults (the OpenAI kind points
at LM Studio's ``http://localhost:1234/v1``) and its own options. What every HTTP-speaking kind
shares lives in :class:`HTTPProviderConfig`.
"""

from __future__ import annotations

import httpx
import msgspec

__all__ = ("HTTPProviderConfig", "OpenAIConfig", "display_url")


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
            f"model={self.model!r}, max_tokens={self.max_tokens}, extra_headers={sorted(self.extra_headers)!r})"
        )


class OpenAIConfig(HTTPProviderConfig, tag="openai"):
    """An OpenAI-compatible server: LM Studio, llama.cpp's server, vLLM, Ollama's ``/v1``."""

    base_url: str = "http://localhost:1234/v1"
    """Requests go to ``{base_url}/chat/completions``; LM Studio's default."""
    stream_usage: bool = True
    """Ask for token usage in the stream (``stream_options.include_usage``)."""
