"""Who is asking: the principal every request carries, whatever the transport.

Authentication (when it is on) puts a :class:`Principal` into the connection's ``user``; without
it every request is :data:`ANONYMOUS`. Everything that is owned or counted per caller (stored
conversations, rate limits) takes the principal from here, never from a handler's own checks.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec
from litestar.connection import ASGIConnection

__all__ = ("ANONYMOUS", "Principal", "client_address", "principal_of")


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
    """The peer's address (proxies are only believed where the rate limits' configuration says so)."""
    client = connection.scope.get("client")
    return str(client[0]) if client else "unknown"
