"""Which provider answers a request's ``model``, and which ones to try after it (CONTRACT §3, §9).

* No ``model``: the default provider, with its own default model.
* ``"<provider>/<model>"`` where a provider of that name (case-insensitive) is configured: that
  provider, with that model (``"<provider>/"`` with nothing after the slash is 400). Real model
  ids contain slashes (``qwen/qwen3-8b``), so the part before the first ``/`` names a provider
  only when one of that name is configured; anything else is a bare id.
* A bare id goes to the provider whose model list has it (the server's listing, its configured
  ``models``, its default ``model``); listed by several, to the default provider when it is one
  of them, else 400 naming the candidates; listed by none, to the default provider as it is (LM
  Studio answers ids it does not list). With an empty cache this waits for the listings, each
  no longer than its cut-off (:mod:`app.models`); with one provider there is nothing to look up.

After the provider that answers come its ``fallback`` entries, each once, in order:
``"<provider>"`` with that provider's own default model, ``"<provider>/<model>"`` with the one
named. The fallbacks' own lists are not followed.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import InvalidRequest
from app.models import ModelCatalog
from providers.base import LLMProvider
from providers.registry import ProviderRegistry

__all__ = ("Attempt", "route", "split_model")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One provider to ask, and the model to ask it for (``None``: its own default)."""

    provider: LLMProvider
    model: str | None


def split_model(model: str, registry: ProviderRegistry) -> tuple[str | None, str]:
    """``(provider, model id)`` for ``"<provider>/<model>"`` naming a configured provider, else ``(None, model)``.

    Raises:
        InvalidRequest: ``model`` names a provider but no model (``"local/"``).
    """
    head, slash, rest = model.partition("/")
    if not (slash and head in registry):
        return None, model
    if not rest:
        raise InvalidRequest(
            f'model {model!r} names provider {head!r} but no model: send "{head}/<model>",'
            " or leave model out for that provider's default"
        )
    return head.lower(), rest


async def route(
    model: str | None, registry: ProviderRegistry, catalog: ModelCatalog | None = None
) -> tuple[Attempt, ...]:
    """The providers to try for ``model``, in order (the first one, then its fallbacks).

    Args:
        model: the request's ``model``, if it has one.
        registry: the configured providers.
        catalog: their model lists, for bare ids; without one a bare id goes to the default provider.

    Raises:
        InvalidRequest: ``model`` names a provider but no model, or a bare id several providers
            list when the default provider is not among them.
    """
    default = registry.default
    if not model:
        first = Attempt(registry.get(default), None)
    else:
        named, model_id = split_model(model, registry)
        if named is None:
            named = await _owner(model_id, registry, catalog)
        first = Attempt(registry.get(named), model_id)
    return (first, *_fallbacks(first, registry))


async def _owner(model_id: str, registry: ProviderRegistry, catalog: ModelCatalog | None) -> str:
    default = registry.default
    if catalog is None or len(registry.names) == 1:
        return default
    candidates = await catalog.offered_by(model_id, prefer=default)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        return default
    choices = ", ".join(f'"{name}/{model_id}"' for name in candidates)
    raise InvalidRequest(
        f"model {model_id!r} is offered by several providers ({', '.join(candidates)}) and the default"
        f" provider {default!r} is not one of them: name the one you mean, as one of {choices}"
    )


def _fallbacks(first: Attempt, registry: ProviderRegistry) -> list[Attempt]:
    config = registry.config(first.provider.name)
    if config is None or not config.fallback:
        return []
    tried = {_key(first, registry)}
    attempts: list[Attempt] = []
    for entry in config.fallback:
        named, model_id = split_model(entry, registry)
        attempt = Attempt(registry.get(named), model_id) if named is not None else Attempt(registry.get(entry), None)
        key = _key(attempt, registry)
        if key not in tried:
            tried.add(key)
            attempts.append(attempt)
    return attempts


def _key(attempt: Attempt, registry: ProviderRegistry) -> tuple[str, str | None]:
    """What makes two attempts the same: the provider and the model it would be sent."""
    name = attempt.provider.name
    config = registry.config(name)
    return name, attempt.model or (config.model if config is not None else None)
