"""The configured providers by name, each built by its kind over one shared HTTP client."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from providers.base import LLMProvider
from providers.errors import ModelNotFound
from providers.kinds import PROVIDER_KINDS, ProviderConfig

__all__ = ("ProviderRegistry",)


class ProviderRegistry:
    """The configured providers, by lower-case name, and which one is the default."""

    __slots__ = ("_configs", "_providers", "default")

    def __init__(
        self,
        providers: Mapping[str, LLMProvider],
        default: str,
        configs: Mapping[str, ProviderConfig] | None = None,
    ) -> None:
        self._providers = {name.lower(): provider for name, provider in providers.items()}
        self._configs = {name.lower(): config for name, config in (configs or {}).items()}
        self.default = default.lower()
        if self.default not in self._providers:
            raise ValueError(f"the default provider {default!r} is not among {sorted(self._providers)}")

    @classmethod
    def build(cls, configs: Mapping[str, ProviderConfig], default: str, client: httpx.AsyncClient) -> ProviderRegistry:
        """Instantiate every configured provider by its kind, over one shared HTTP client."""
        providers = {
            name.lower(): PROVIDER_KINDS[config.kind].build(name.lower(), config, client)
            for name, config in configs.items()
        }
        return cls(providers, default, configs)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._providers)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._providers

    def get(self, name: str) -> LLMProvider:
        """The provider called ``name`` (case-insensitive).

        Raises:
            ModelNotFound: no provider has that name.
        """
        try:
            return self._providers[name.lower()]
        except KeyError:
            raise ModelNotFound(f"no provider named {name!r} is configured") from None

    def config(self, name: str) -> ProviderConfig | None:
        """The configuration ``name`` was built from (``None`` for a provider handed in as it is)."""
        return self._configs.get(name.lower())
