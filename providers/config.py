"""Configuration of one named provider, as read from ``providers.<name>`` in the settings."""

from __future__ import annotations

import httpx
import msgspec

__all__ = ("ProviderConfig", "display_url")


def display_url(url: str) -> str:
    """``url`` without user-info, query or fragment (where secrets hide), fit for messages and logs."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid URL>"
    if not (parsed.userinfo or parsed.query or parsed.fragment):
        return url
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))


class ProviderConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """One upstream LLM server; the defaults are the contract's."""

    kind: str = "openai"
    base_url: str = "http://localhost:1234/v1"
    api_key: str = ""
    model: str = "local-model"
    max_tokens: int = 512
    connect_timeout_seconds: float = 5.0
    timeout_seconds: float = 120.0

    def __repr__(self) -> str:
        # Keep the API key out of tracebacks, logs and debugger output.
        key = "'***'" if self.api_key else "''"
        return (
            f"ProviderConfig(kind={self.kind!r}, base_url={self.base_url!r}, api_key={key}, "
            f"model={self.model!r}, max_tokens={self.max_tokens})"
        )
