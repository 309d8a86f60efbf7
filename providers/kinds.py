"""The provider kinds a configuration can name: one entry each, config type and implementation.

Adding a kind is its own module (a config Struct tagged with the kind's name, and a class with
``name``, ``open`` and ``list_models``) plus one entry here, and its config type in the union;
nothing else in the service names a kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import httpx

from providers.base import LLMProvider
from providers.config import HTTPProviderConfig, OllamaConfig, OpenAIConfig
from providers.ollama import OllamaProvider
from providers.openai import OpenAICompatibleProvider

__all__ = ("DEFAULT_KIND", "PROVIDER_KINDS", "ProviderConfig", "ProviderKind")

#: The config of any one provider, decoded by its ``kind`` tag.
ProviderConfig: TypeAlias = OpenAIConfig | OllamaConfig

#: The kind a provider has when its configuration names none.
DEFAULT_KIND = "openai"


@dataclass(frozen=True, slots=True)
class ProviderKind:
    """How to read one kind's configuration and build its provider."""

    config: type[HTTPProviderConfig]
    build: Callable[[str, Any, httpx.AsyncClient], LLMProvider]


#: Provider implementations by the ``kind`` a configuration names.
PROVIDER_KINDS: Mapping[str, ProviderKind] = {
    "openai": ProviderKind(OpenAIConfig, OpenAICompatibleProvider),
    "ollama": ProviderKind(OllamaConfig, OllamaProvider),
}
