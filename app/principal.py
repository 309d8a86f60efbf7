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

__all__ = ("ANONYMOUS", "FORWARDING_PEER", "Principal", "client_address", "client_address_of_scope", "principal_of")

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAX_ADDRESS_CHARS: Final = 64
#: The client address of every request a server's own proxy handling rewrote (see ``client_address_of_scope``).
FORWARDING_PEER: Final = "forwarding-proxy"


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
    client wrote, so they are never believed).

    uvicorn believes ``X-Forwarded-For`` from its ``--forwarded-allow-ips`` (loopback by default)
    and then puts the forwarded address where the peer's was. The peer's own address is lost
    then, but not the fact: the scope's client is one of the header's entries. Such a request is
    counted as :data:`FORWARDING_PEER` (every request through that proxy alike) unless
    ``trusted_proxies`` is set, in which case the header is read as if from a trusted proxy.
    """
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    forwarded = [value for name, value in scope["headers"] if name == b"x-forwarded-for"]
    app = scope.get("litestar_app")
    settings = app.state.get("settings") if app is not None else None
    proxies: list[str] = settings.rate_limit.trusted_proxies if settings is not None else []
    if not forwarded:
        return peer
    entries = [entry.strip() for value in forwarded for entry in value.decode("latin-1").split(",") if entry.strip()]
    rewritten = any(_host_of(entry) == peer for entry in entries)
    if not proxies:
        return FORWARDING_PEER if rewritten else peer
    networks = _networks(tuple(proxies))
    if not rewritten and not _trusted(peer, networks):
        return peer
    hosts = [host for host in map(_host_of, entries) if host]  # "[]" names nobody
    for host in reversed(hosts):
        if not _trusted(host, networks):
            return host[:_MAX_ADDRESS_CHARS]
    return hosts[0][:_MAX_ADDRESS_CHARS] if hosts else peer


def _host_of(entry: str) -> str:
    """An ``X-Forwarded-For`` entry without the port some proxies add (``1.2.3.4:5678``, ``[::1]:80``)."""
    if entry.startswith("["):
        return entry[1 : entry.find("]")] if "]" in entry else entry
    host, colon, port = entry.partition(":")
    return host if colon and ":" not in port else entry


@lru_cache(maxsize=8)
def _networks(proxies: tuple[str, ...]) -> tuple[_Network, ...]:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def _trusted(address: str, networks: tuple[_Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    return any(ip in network for network in networks)
