"""Per-request dependencies: the validated request, its resolved parameters, and its provider."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, SkipValidation

from app.config import Settings
from app.schemas import ChatRequest
from providers.base import ChatMessage, ChatParams, LLMProvider
from providers.errors import InvalidRequest
from providers.registry import ProviderRegistry

__all__ = ("DEPENDENCIES", "provide_chat_params", "provide_provider")


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


def provide_registry(state: State) -> ProviderRegistry:
    registry: ProviderRegistry = state.registry
    return registry


def _validate(data: Any, max_message_chars: int) -> ChatRequest:
    if not isinstance(data, dict):
        raise InvalidRequest('the request body must be a JSON object such as {"message": "Hello"}')
    try:
        # strict: "1.5" is not a number and 1 is not a string, whatever a lax parser would say.
        request = msgspec.convert(data, ChatRequest, strict=True)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid request body: {exc}") from None
    if request.message is not None and len(request.message) > max_message_chars:
        raise InvalidRequest(f"message is longer than the limit of {max_message_chars} characters")
    if request.message is None and not request.messages:
        raise InvalidRequest('nothing to answer: send "message" (or a non-empty "messages" list)')
    return request


async def provide_chat_params(
    data: JSONBody[SkipValidation[ChatRequest]],
    registry: NamedDependency[SkipValidation[ProviderRegistry]],
    settings: NamedDependency[SkipValidation[Settings]],
) -> ChatParams:
    """Validate the body and resolve which provider and model answer it.

    Raises:
        InvalidRequest: the body is not a valid chat request.
    """
    request = _validate(data, settings.limits.max_message_chars)
    provider, model = registry.resolve(request.model)
    messages: list[ChatMessage] = []
    if request.system is not None:
        messages.append(ChatMessage("system", request.system))
    if request.messages:
        messages.extend(request.messages)
    if request.message is not None:
        messages.append(ChatMessage("user", request.message))
    return ChatParams(
        provider=provider,
        model=model,
        messages=messages,
        max_tokens=request.max_tokens or registry.config(provider).max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
    )


def provide_provider(
    params: NamedDependency[SkipValidation[ChatParams]],
    registry: NamedDependency[SkipValidation[ProviderRegistry]],
    data: JSONBody[SkipValidation[ChatRequest]],
) -> LLMProvider:
    """The provider the request's ``model`` names (or the default one)."""
    # ``data`` is unused here, but Litestar 2.25 raises KeyError('data') at start-up when a
    # dependency reaches the body only through another dependency; declaring it avoids that.
    del data
    return registry.get(params.provider)


DEPENDENCIES = {
    "settings": Provide(provide_settings, sync_to_thread=False),
    "registry": Provide(provide_registry, sync_to_thread=False),
    "params": Provide(provide_chat_params),
    "provider": Provide(provide_provider, sync_to_thread=False),
}
