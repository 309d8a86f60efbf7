"""The model catalog: what every configured provider serves, each asked concurrently and cached per provider.

A provider's listing (``list_models``: ``GET {base_url}/models`` for the OpenAI kind, ``GET
/api/tags`` for Ollama) is cut off at the smaller of its ``timeout_seconds`` and
``connect_timeout_seconds`` + 5 s. A success is kept for ``models_cache_seconds``; a failure is
not kept, so the next question asks again. Callers that ask while a listing is under way share
it, and a caller that goes away (a client that left) does not cut it short for the others.

Besides what a server lists, each provider always offers its configured default ``model`` and
its ``providers.<name>.models`` — also while its server is down. ``GET /models``
(:meth:`ModelCatalog.model_list`), the routing of bare model ids (:meth:`ModelCatalog.offered_by`)
and ``/ready`` (:meth:`ModelCatalog.status`, which never asks upstream) read from here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

import msgspec

from providers.errors import AgentError, UpstreamTimeout
from providers.registry import ProviderRegistry

__all__ = ("Listing", "ListingError", "ModelCatalog", "ModelEntry", "ModelList", "ProviderStatus")

logger = logging.getLogger("app.models")

#: What ``/ready`` says of a provider: its last listing worked, failed, or there was none yet.
ProviderStatus: TypeAlias = Literal["ok", "unreachable", "unknown"]
_UNCONFIGURED_CUTOFF: Final = 10.0  # a provider handed in without a config: the defaults' cut-off (min(120, 5 + 5))
#: HTTP kinds cut their own listing off at the cut-off (and say where they were waiting); this is
#: the backstop for a provider that does not.
_BACKSTOP_SECONDS: Final = 0.1


class ModelEntry(msgspec.Struct, kw_only=True):
    """One model a client may pick: send ``id`` as the chat's ``model``."""

    id: str
    """``"<provider>/<model>"``."""
    provider: str
    model: str
    """The id the provider knows the model by."""
    default: bool
    """The model a chat gets when it names none (the default provider's default model)."""


class ListingError(msgspec.Struct, kw_only=True):
    """A provider that could not be asked for its models; the list goes on without it."""

    provider: str
    code: str
    """One of the contract's error codes (``upstream_unavailable``, ``upstream_timeout``, …)."""
    message: str


class ModelList(msgspec.Struct, kw_only=True):
    """``GET /models``: every provider's models, and the providers that could not say."""

    data: list[ModelEntry]
    errors: list[ListingError]


@dataclass(frozen=True, slots=True)
class Listing:
    """What one provider's server listed, and when."""

    models: tuple[str, ...]
    """The ids, in the server's order."""
    names: frozenset[str]
    """Every id the provider answers for: ``models`` and the aliases the server gave."""
    at: float


_Pending: TypeAlias = "asyncio.Task[Listing | AgentError]"


class ModelCatalog:
    """The models of every provider in ``registry``; one per app.

    Args:
        registry: the configured providers.
        cache_seconds: how long a successful listing is kept (``models_cache_seconds``); 0 keeps none.
        clock: monotonic seconds (tests replace it).
    """

    __slots__ = ("_cache", "_clock", "_configured", "_cutoffs", "_defaults", "_pending", "_registry", "_status", "_ttl")

    def __init__(
        self, registry: ProviderRegistry, cache_seconds: float = 30.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._registry = registry
        self._ttl = cache_seconds
        self._clock = clock
        self._cache: dict[str, Listing] = {}
        self._pending: dict[str, _Pending] = {}
        self._status: dict[str, ProviderStatus] = {}
        self._defaults: dict[str, str | None] = {}
        self._configured: dict[str, tuple[str, ...]] = {}
        self._cutoffs: dict[str, float] = {}
        for name in registry.names:
            config = registry.config(name)
            self._defaults[name] = config.model if config is not None else None
            self._configured[name] = tuple(config.models) if config is not None else ()
            self._cutoffs[name] = config.listing_timeout_seconds if config is not None else _UNCONFIGURED_CUTOFF

    @property
    def registry(self) -> ProviderRegistry:
        return self._registry

    def status(self) -> dict[str, ProviderStatus]:
        """Each provider's state from its last listing, without asking anyone."""
        return {name: self._status.get(name, "unknown") for name in self._registry.names}

    async def listing(self, name: str) -> Listing | AgentError:
        """Provider ``name``'s listing: the cached one while it is fresh, else a new one (or why there is none)."""
        return await _settle(self._start(name))

    async def model_list(self) -> ModelList:
        """``GET /models``: every provider asked at once; the default provider first, then the rest in config order."""
        names = self._ordered_names()
        started = [self._start(name) for name in names]
        data: list[ModelEntry] = []
        errors: list[ListingError] = []
        for name, pending in zip(names, started, strict=True):
            result = await _settle(pending)
            listed = result.models if isinstance(result, Listing) else ()
            default = self._defaults[name]
            for model in _unique((default,) if default else (), listed, self._configured[name]):
                is_default = model == default and name == self._registry.default
                data.append(ModelEntry(id=f"{name}/{model}", provider=name, model=model, default=is_default))
            if isinstance(result, AgentError):
                errors.append(ListingError(provider=name, code=result.code, message=result.message))
        return ModelList(data=data, errors=errors)

    async def offered_by(self, model: str, *, prefer: str) -> tuple[str, ...]:
        """The providers that offer ``model``, in config order; only ``prefer`` when it is one of them.

        Every provider is asked at once (each within its cut-off); once ``prefer`` is known to
        offer the model the answer does not wait for the others.
        """
        started = {name: self._start(name) for name in self._registry.names}
        first = started.get(prefer)
        if first is not None and self._offers(prefer, await _settle(first), model):
            return (prefer,)
        found: list[str] = []
        for name, pending in started.items():
            if name != prefer and self._offers(name, await _settle(pending), model):
                found.append(name)
        return tuple(found)

    async def aclose(self) -> None:
        """Stop the listings under way (the app is shutting down)."""
        pending = list(self._pending.values())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _offers(self, name: str, result: Listing | AgentError, model: str) -> bool:
        if model == self._defaults[name] or model in self._configured[name]:
            return True
        return isinstance(result, Listing) and model in result.names

    def _ordered_names(self) -> list[str]:
        default = self._registry.default
        return [default, *(name for name in self._registry.names if name != default)]

    def _start(self, name: str) -> Listing | _Pending:
        """The fresh cached listing, or the listing under way (started now if there is none)."""
        cached = self._cache.get(name)
        if cached is not None and self._clock() - cached.at < self._ttl:
            return cached
        pending = self._pending.get(name)
        if pending is None:
            pending = self._pending[name] = asyncio.get_running_loop().create_task(self._fetch(name))
            pending.add_done_callback(lambda done: self._forget(name, done))
        return pending

    def _forget(self, name: str, done: _Pending) -> None:
        if self._pending.get(name) is done:
            del self._pending[name]

    async def _fetch(self, name: str) -> Listing | AgentError:
        provider = self._registry.get(name)
        cutoff = self._cutoffs[name]
        error: AgentError
        try:
            async with asyncio.timeout(cutoff + _BACKSTOP_SECONDS):
                models = await provider.list_models()
        except TimeoutError:
            error = UpstreamTimeout(f"provider {name!r} did not list its models within {cutoff:g} s")
        except AgentError as exc:
            error = exc
        except Exception:
            logger.exception("listing the models of provider %r failed", name)
            error = AgentError(f"listing the models of provider {name!r} failed; the service log has the details")
        else:
            ids = tuple(_unique(model.id for model in models))
            names = frozenset((*ids, *(alias for model in models for alias in model.aliases)))
            listing = Listing(models=ids, names=names, at=self._clock())
            self._cache[name] = listing
            self._status[name] = "ok"
            return listing
        self._cache.pop(name, None)  # failures are not kept, and an older success is stale by now
        # Said once when a provider goes away, not on every listing while it stays away.
        level = logging.DEBUG if self._status.get(name) == "unreachable" else logging.WARNING
        self._status[name] = "unreachable"
        logger.log(level, "provider %r could not list its models: %s: %s", name, error.code, error.message)
        return error


async def _settle(started: Listing | _Pending) -> Listing | AgentError:
    if isinstance(started, Listing):
        return started
    # Shielded: a caller that is cancelled (its client left) leaves the listing to the others.
    return await asyncio.shield(started)


def _unique(*groups: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for group in groups:
        for item in group:
            seen.setdefault(item, None)
    return list(seen)
