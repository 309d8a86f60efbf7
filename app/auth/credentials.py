"""Credentials checked against the configuration: API keys by their SHA-256, the Basic user by Argon2 or plain text.

Every comparison is constant-time (:func:`hmac.compare_digest`, no early exit across keys).
Nothing here logs, and no credential is kept: the Basic success cache is keyed by an HMAC of
the credential under a key made at start-up, never by the credential itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from typing import Final, Literal

import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.principal import Principal
from app.sections import AuthSettings

__all__ = ("KEY_PREFIX", "Authenticator", "Presented", "key_hash", "new_api_key", "presented_credential")

#: Every key ``litestar keys create`` makes starts with this (greppable in leak scanners).
KEY_PREFIX: Final = "agb_"
_KEY_BYTES: Final = 32
_BASIC_CACHE_SECONDS: Final = 30.0
_BASIC_CACHE_ENTRIES: Final = 256
#: The WebSocket subprotocol that carries a key: ``bearer.<key>`` (browsers cannot set headers there).
BEARER_SUBPROTOCOL_PREFIX: Final = "bearer."

Presented = tuple[Literal["none", "key", "basic", "invalid"], str, str]
"""What a request offers: ``("key", key, "")``, ``("basic", user, password)``, ``("invalid", "", "")``
(a malformed or unknown ``Authorization``) or ``("none", "", "")``."""

_NONE: Final[Presented] = ("none", "", "")
_INVALID: Final[Presented] = ("invalid", "", "")


def new_api_key() -> str:
    """A new random API key: ``agb_`` and 43 unpadded base64url characters (32 random bytes)."""
    return KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(_KEY_BYTES)).rstrip(b"=").decode("ascii")


def key_hash(key: str) -> str:
    """What ``auth.api_keys.<name>`` holds for ``key``: ``sha256:<64 lowercase hex>`` of the whole key."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def presented_credential(headers: Iterable[tuple[bytes, bytes]], subprotocols: Iterable[str] = ()) -> Presented:
    """The credential a request offers, from raw ASGI headers (and a WebSocket's subprotocol offer).

    ``Authorization`` wins over ``X-API-Key``, which wins over a ``bearer.<key>`` subprotocol.
    """
    authorization = api_key = None
    for name, value in headers:
        if name == b"authorization" and authorization is None:
            authorization = value
        elif name == b"x-api-key" and api_key is None:
            api_key = value
    if authorization is not None:
        return _from_authorization(authorization)
    if api_key is not None:
        key = api_key.decode("latin-1").strip()
        return ("key", key, "") if key else _INVALID
    for protocol in subprotocols:
        if protocol.startswith(BEARER_SUBPROTOCOL_PREFIX):
            key = protocol[len(BEARER_SUBPROTOCOL_PREFIX) :]
            return ("key", key, "") if key else _INVALID
    return _NONE


def _from_authorization(value: bytes) -> Presented:
    scheme, _, rest = value.decode("latin-1").strip().partition(" ")
    rest = rest.strip()
    if not rest:
        return _INVALID
    scheme = scheme.lower()
    if scheme == "bearer":
        return ("key", rest, "")
    if scheme != "basic":
        return _INVALID
    try:
        decoded = binascii.a2b_base64(rest, strict_mode=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return _INVALID
    user, colon, password = decoded.partition(":")
    return ("basic", user, password) if colon else _INVALID


class Authenticator:
    """The configured credentials, ready to check what a request presents."""

    __slots__ = ("_argon2", "_cache", "_cache_key", "_hasher", "_keys", "_password", "_username", "basic")

    def __init__(self, auth: AuthSettings) -> None:
        self._keys = tuple(
            (bytes.fromhex(value.removeprefix("sha256:")), Principal(name.lower(), "api_key"))
            for name, value in sorted(auth.api_keys.items())
        )
        self._username = auth.username.encode("utf-8")
        self._password = auth.password
        self._argon2 = auth.password.startswith("$argon2")
        self._hasher = PasswordHasher()
        self._cache: dict[bytes, float] = {}
        self._cache_key = secrets.token_bytes(32)
        self.basic = bool(auth.username)
        """HTTP Basic is configured (its challenge may be offered)."""

    def check_key(self, key: str) -> Principal | None:
        """The principal whose key this is, or ``None``; every configured key is compared, in constant time."""
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        found: Principal | None = None
        for expected, principal in self._keys:
            if hmac.compare_digest(digest, expected):
                found = principal
        return found

    async def check_basic(self, username: str, password: str) -> Principal | None:
        """The Basic user if both match (Argon2 runs in a worker thread), else ``None``."""
        if not self.basic:
            return None
        user = username.encode("utf-8")
        secret = password.encode("utf-8")
        tag = hmac.new(self._cache_key, user + b"\0" + secret, hashlib.sha256).digest()
        now = time.monotonic()
        until = self._cache.get(tag)
        if until is not None and until > now:
            return Principal(username, "basic")
        user_ok = hmac.compare_digest(user, self._username)
        # The password is checked whatever the user name, so timing says nothing about either.
        if self._argon2:
            password_ok = await anyio.to_thread.run_sync(self._verify_argon2, password)
        else:
            password_ok = hmac.compare_digest(secret, self._password.encode("utf-8"))
        if not (user_ok and password_ok):
            return None
        if len(self._cache) >= _BASIC_CACHE_ENTRIES:
            self._cache.clear()
        self._cache[tag] = now + _BASIC_CACHE_SECONDS
        return Principal(username, "basic")

    async def check(self, presented: Presented) -> Principal | None:
        """The principal for what a request presents, or ``None`` (missing or wrong look the same)."""
        kind, first, second = presented
        if kind == "key":
            return self.check_key(first)
        if kind == "basic":
            return await self.check_basic(first, second)
        return None

    def _verify_argon2(self, password: str) -> bool:
        try:
            return self._hasher.verify(self._password, password)
        except (VerificationError, InvalidHashError):
            return False
