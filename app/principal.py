"""Who is asking: the principal every request carries, whatever the transport.

Authentication (when it is on) puts a :class:`Principal` into the connection's ``user``; without
it every request is :data:`ANONYMOUS`. Everything that is owned or counted per caller (stored
conversations, rate limits) takes the principal from here, never from a handler's own checks.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec
from litestar.connection import ASGIConnection

if TYPE_CHECKING:
    from litestar.types import Scope

__all__ = ("ANONYMOUS", "Principal", "client_address", "client_address_of_scope", "principal_of")

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAX_ADDRESS_CHARS: Final = 64


class Principal(msgspec.Struct, frozen=True, gc=False):
    """A caller: an API key's name, a Basic user name, or ``anonymous`` when auth is off."""

    name: str
    kind: Literal["anonymous", "api_key", "basic"] = "anonymous"


ANONYMOUS: Final = Principal("anonymous")


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The principal authentication put on ``connection``, else :data:`ANONYMOUS`."""
    user = connection.scope.get("user")
    return user if isinstance(user, Principal) else ANONYMOUS


def client_address(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The client's address: the peer's, or what a trusted proxy says (see :func:`client_address_of_scope`)."""
    return client_address_of_scope(connection.scope)


def client_address_of_scope(scope: Scope) -> str:
    """The client's address as CONTRACT §7 defines it, for limits that count per address.

    The peer address, or, when the peer is in ``rate_limit.trusted_proxies``, the right-most
    ``X-Forwarded-For`` entry that is not a trusted proxy (entries left of it are whatever the
    client wrote, so they are never believed). uvicorn's own ``--forwarded-allow-ips`` does not
    matter here: only the configured proxies are trusted.
    """
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    app = scope.get("litestar_app")
    settings = app.state.get("settings") if app is not None else None
    proxies: list[str] = settings.rate_limit.trusted_proxies if settings is not None else []
    if not proxies:
        return peer
    networks = _networks(tuple(proxies))
    if not _trusted(peer, networks):
        return peer
    entries = [
        entry.strip()
        for name, value in scope["headers"]
        if name == b"x-forwarded-for"
        for entry in value.decode("latin-1").split(",")
        if entry.strip()
    ]
    for entry in reversed(entries):
        if not _trusted(entry, networks):
            return entry[:_MAX_ADDRESS_CHARS]
    return entries[0][:_MAX_ADDRESS_CHARS] if entries else peer


@lru_cache(maxsize=8)
def _networks(proxies: tuple[str, ...]) -> tuple[_Network, ...]:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def _trusted(address: str, networks: tuple[_Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    return any(ip in network for network in networks)
