"""Which provider answers a request's ``model``, and which ones to try after it.

The part of ``model`` before the first ``/`` names a provider only when one of that name is
configured (case-insensitive), since real model ids contain slashes (``qwen/qwen3-8b``);
anything else goes to the default provider as it is, and no ``model`` at all means the default
provider's own default model.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import InvalidRequest
from providers.base import LLMProvider
from providers.registry import ProviderRegistry

__all__ = ("Attempt", "route")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One provider to ask, and the model to ask it for (``None``: its own default)."""

    provider: LLMProvider
    model: str | None


def route(model: str | None, registry: ProviderRegistry) -> tuple[Attempt, ...]:
    """The providers to try for ``model``, in order (the first one, then its fallbacks).

    Raises:
        InvalidRequest: ``model`` names a provider but no model (``"local/"``).
    """
    if not model:
        return (Attempt(registry.get(registry.default), None),)
    head, slash, rest = model.partition("/")
    if slash and head in registry:
        if not rest:
            raise InvalidRequest(
                f'model {model!r} names provider {head!r} but no model: send "{head}/<model>",'
                " or leave model out for that provider's default"
            )
        return (Attempt(registry.get(head), rest),)
    return (Attempt(registry.get(registry.default), model),)
