"""LLM providers: the protocol, the events they yield, the upstream errors, and the provider kinds."""

from __future__ import annotations

from providers.base import (
    CalledFunction,
    ChatMessage,
    ChatParams,
    EventStream,
    FunctionSpec,
    ListedModel,
    LLMProvider,
    NamedFunction,
    ToolChoice,
    ToolSpec,
    ToolTurnCall,
)
from providers.config import HTTPProviderConfig, OllamaConfig, OpenAIConfig
from providers.errors import (
    AgentError,
    ModelNotFound,
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
    ToolCall,
    ToolCallDelta,
    ToolCallDeltaEvent,
    ToolCallEvent,
    Usage,
)
from providers.http import HTTPEventStream, ReadyEventStream, StreamParser, UpstreamHTTP
from providers.http11_transport import HTTP11Transport
from providers.kinds import DEFAULT_KIND, PROVIDER_KINDS, ProviderConfig, ProviderKind
from providers.ndjson import NDJSONLines
from providers.ollama import OllamaProvider
from providers.ollama_answer import OllamaAnswer
from providers.openai import OpenAICompatibleProvider
from providers.openai_answer import OpenAIAnswer, PromptSize
from providers.registry import ProviderRegistry
from providers.sse import ServerSentEvent, SSEDecoder
from providers.tool_calls import ToolCallFragment, ToolCallTracker, arguments_text, new_call_id

__all__ = (
    "DEFAULT_KIND",
    "PROVIDER_KINDS",
    "AgentError",
    "CalledFunction",
    "ChatEvent",
    "ChatMessage",
    "ChatParams",
    "DeltaEvent",
    "DoneEvent",
    "ErrorEvent",
    "ErrorInfo",
    "EventStream",
    "FunctionSpec",
    "HTTP11Transport",
    "HTTPEventStream",
    "HTTPProviderConfig",
    "LLMProvider",
    "ListedModel",
    "Meta",
    "MetaEvent",
    "ModelNotFound",
    "NDJSONLines",
    "NamedFunction",
    "OllamaAnswer",
    "OllamaConfig",
    "OllamaProvider",
    "OpenAIAnswer",
    "OpenAICompatibleProvider",
    "OpenAIConfig",
    "PromptSize",
    "ProviderConfig",
    "ProviderKind",
    "ProviderRegistry",
    "RateLimited",
    "ReadyEventStream",
    "ReasoningEvent",
    "SSEDecoder",
    "ServerSentEvent",
    "StreamInterrupted",
    "StreamParser",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallDeltaEvent",
    "ToolCallEvent",
    "ToolCallFragment",
    "ToolCallTracker",
    "ToolChoice",
    "ToolSpec",
    "ToolTurnCall",
    "UpstreamHTTP",
    "UpstreamProtocolError",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "Usage",
    "arguments_text",
    "new_call_id",
)
