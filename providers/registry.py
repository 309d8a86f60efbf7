"""Named providers built from configuration, and resolution of a request's ``model`` field."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeAlias

import httpx

from providers.base import LLMProvider
from providers.config import ProviderConfig
from providers.errors import ModelNotFound
from providers.openai import OpenAICompatibleProvider

__all__ = ("PROVIDER_KINDS", "ProviderFactory", "ProviderRegistry")

ProviderFactory: TypeAlias = Callable[[str, ProviderConfig, httpx.AsyncClient], LLMProvider]

#: Provider implementations by the ``kind`` a configuration names.
PROVIDER_KINDS: Mapping[str, ProviderFactory] = {
    "openai": OpenAICompatibleProvider,
}


class ProviderRegistry:
    """The configured providers, by lower-case name."""

    __slots__ = ("_configs", "_providers", "default")

    def __init__(
        self,
        configs: Mapping[str, ProviderConfig],
        default: str,
        providers: Mapping[str, LLMProvider],
    ) -> None:
        self._configs = {name.lower(): config for name, config in configs.items()}
        self._providers = {name.lower(): provider for name, provider in providers.items()}
        self.default = default.lower()

    @classmethod
    def build(cls, configs: Mapping[str, ProviderConfig], default: str, client: httpx.AsyncClient) -> ProviderRegistry:
        """Instantiate every configured provider over one shared HTTP client."""
        providers = {
            name: PROVIDER_KINDS[config.kind](name.lower(), config, client) for name, config in configs.items()
        }
        return cls(configs, default, providers)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._configs)

    def config(self, name: str) -> ProviderConfig:
        return self._configs[name]

    def get(self, name: str) -> LLMProvider:
        """The provider called ``name`` (case-insensitive).

        Raises:
            ModelNotFound: no provider has that name.
        """
        try:
            return self._providers[name.lower()]
        except KeyError:
            raise ModelNotFound(f"no provider named {name!r} is configured") from None

    def resolve(self, model: str | None) -> tuple[str, str]:
        """Split a request's ``model`` into ``(provider name, model id)``.

        The part before the first ``/`` names a provider only when one of that name exists,
        since real model ids contain slashes (``qwen/qwen3-8b``). Anything else goes to the
        default provider; no ``model`` at all means the default provider's own model.
        """
        if not model:
            return self.default, self._configs[self.default].model
        head, slash, rest = model.partition("/")
        name = head.lower()
        if slash and name in self._configs:
            return name, rest or self._configs[name].model
        return self.default, model
