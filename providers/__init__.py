"""LLM providers: the protocol, the events they yield, and the OpenAI-compatible implementation."""

from __future__ import annotations

from providers.base import ChatMessage, ChatParams, EventStream, LLMProvider
from providers.config import ProviderConfig
from providers.errors import (
    AgentError,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    StreamInterrupted,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from providers.events import (
    ChatEvent,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    ErrorInfo,
    Meta,
    MetaEvent,
    ReasoningEvent,
    Usage,
)
from providers.openai import OpenAICompatibleProvider
from providers.registry import PROVIDER_KINDS, ProviderRegistry
from providers.sse import ServerSentEvent, SSEDecoder

__all__ = (
    "PROVIDER_KINDS",
    "AgentError",
    "ChatEvent",
    "ChatMessage",
    "ChatParams",
    "DeltaEvent",
    "DoneEvent",
    "ErrorEvent",
    "ErrorInfo",
    "EventStream",
    "InvalidRequest",
    "LLMProvider",
    "Meta",
    "MetaEvent",
    "ModelNotFound",
    "NotFound",
    "OpenAICompatibleProvider",
    "PayloadTooLarge",
    "ProviderConfig",
    "ProviderRegistry",
    "RateLimited",
    "ReasoningEvent",
    "SSEDecoder",
    "ServerSentEvent",
    "StreamInterrupted",
    "UpstreamProtocolError",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "Usage",
)
