"""The configuration sections that the service's features read (CONTRACT §6–§13, keys listed in §14).

Each section is a Struct with the contract's defaults (those of ``development``; the other
environments' differences live in ``settings.toml``) and a ``problems()`` method that names
what cannot work, as ``(key within the section, problem)`` pairs. :mod:`app.config` turns the
first one into the one-line start-up error. Secrets (passwords, keys, URLs with credentials)
are never part of a problem's text.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final, Literal

import msgspec
from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = (
    "SAMPLE_PASSWORD",
    "SECTIONS",
    "AuthSettings",
    "DatabaseSettings",
    "HistorySettings",
    "LoggingSettings",
    "MetricsSettings",
    "PlaygroundSettings",
    "RateLimitSettings",
    "StreamsSettings",
    "WebSocketSettings",
)

_REDIS_URL: Final = re.compile(r"rediss?://\S+|unix://\S+")
_KEY_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KEY_HASH: Final = re.compile(r"sha256:[0-9a-f]{64}")
#: The password ``.secrets.toml.example`` ships with; production refuses it.
SAMPLE_PASSWORD: Final = "change-me"

Problems = list[tuple[str, str]]


class DatabaseSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """Where conversations are stored (§6); ``url`` may hold a password, so it is a secret."""

    enabled: bool = True
    url: str = "sqlite+aiosqlite:///agent-backend.db"

    def problems(self) -> Problems:
        if self.enabled and not self.url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            return [("url", "must be sqlite+aiosqlite:///<file> or postgresql+asyncpg://user@host/db")]
        return []


class HistorySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """How much stored history goes upstream, and how often a streaming answer is saved (§6)."""

    max_messages: int = 50
    max_chars: int = 200_000
    checkpoint_seconds: float = 5.0

    def problems(self) -> Problems:
        found: Problems = []
        if self.max_messages < 1:
            found.append(("max_messages", "must be at least 1"))
        if self.max_chars < 1:
            found.append(("max_chars", "must be at least 1"))
        if self.checkpoint_seconds <= 0:
            found.append(("checkpoint_seconds", "must be more than 0"))
        return found


class AuthSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """Who may call the API (§7): API keys by name (``sha256:<hex>`` of the key), or one Basic user."""

    enabled: bool = False
    api_keys: dict[str, str] = msgspec.field(default_factory=dict)
    username: str = ""
    password: str = ""
    public_docs: bool = True

    def problems(self) -> Problems:
        found: Problems = []
        seen: dict[str, str] = {}
        for name, value in self.api_keys.items():
            # Never the value in a problem: it may be a pasted plain key.
            if not _KEY_NAME.fullmatch(name):
                found.append((f"api_keys.{name[:64]}", "a key name is 1-64 letters, digits, '_' or '-'"))
            elif not isinstance(value, str) or not _KEY_HASH.fullmatch(value):
                found.append(
                    (
                        f"api_keys.{name}",
                        "must be sha256:<64 lowercase hex> of the key (a plain key is never accepted);"
                        f" make one with `python -m app.auth.cli create {name}`",
                    )
                )
            elif value in seen:
                found.append((f"api_keys.{name}", f"has the same hash as api_keys.{seen[value]}"))
            else:
                seen[value] = name
        if self.username and not self.password:
            found.append(("password", "is empty but auth.username is set"))
        elif self.password and not self.username:
            found.append(("username", "is empty but auth.password is set"))
        elif self.password.startswith("$argon2") and not _is_argon2_hash(self.password):
            found.append(("password", "looks like an Argon2 hash but is not a valid one ($argon2id$…)"))
        return found

    def production_problems(self) -> Problems:
        """What is unsafe in ``production`` on top of :meth:`problems`: no credential, or the sample password."""
        if not self.enabled:
            return []
        if not self.api_keys and not self.username:
            return [
                (
                    "enabled",
                    "auth is on but no credential is configured (make a key with"
                    " `python -m app.auth.cli create <name>`, or set auth.username/auth.password)",
                )
            ]
        if self.password and _is_sample_password(self.password):
            return [("password", f"is the sample {SAMPLE_PASSWORD!r}; set a real one (an Argon2 hash)")]
        return []

    def __repr__(self) -> str:
        return (
            f"AuthSettings(enabled={self.enabled}, api_keys={sorted(self.api_keys)!r}, "
            f"username={self.username!r}, password={'***' if self.password else ''!r})"
        )


class RateLimitSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """Budgets per principal (or per client address when auth is off), shared through Redis when set (§7)."""

    enabled: bool = False
    requests_per_minute: int = 60
    concurrent_streams: int = 4
    auth_failures_per_minute: int = 10
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    """Peers (addresses or networks, ``10.0.0.0/8``) whose ``X-Forwarded-For`` is believed."""
    redis_url: str = ""
    key_prefix: str = "agent-backend:"
    """Prefix of every Redis key the limits use (deployments, or test runs, sharing one Redis)."""
    stream_slot_seconds: float = 30.0
    """How long a stream slot outlives the process holding it (it is renewed every third of this)."""

    def problems(self) -> Problems:
        found: Problems = []
        for key in ("requests_per_minute", "concurrent_streams", "auth_failures_per_minute"):
            if getattr(self, key) < 1:
                found.append((key, "must be at least 1"))
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                found.append(("trusted_proxies", f"{proxy!r} is not an IP address or network like 10.0.0.0/8"))
        if self.redis_url and not _REDIS_URL.fullmatch(self.redis_url):
            found.append(("redis_url", "is not a redis:// URL like redis://127.0.0.1:6379/0"))
        if not 1 <= self.stream_slot_seconds <= 60:
            found.append(("stream_slot_seconds", "must be between 1 and 60 (a dead process's slot comes back then)"))
        return found


class WebSocketSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """``/chat/ws`` (§8)."""

    idle_timeout_seconds: float = 300.0
    max_sockets_per_principal: int = 8

    def problems(self) -> Problems:
        found: Problems = []
        if self.idle_timeout_seconds <= 0:
            found.append(("idle_timeout_seconds", "must be more than 0"))
        if self.max_sockets_per_principal < 1:
            found.append(("max_sockets_per_principal", "must be at least 1"))
        return found


class LoggingSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """Structured logs (§10); ``format`` ``None`` means ``json`` in production and ``text`` elsewhere."""

    log_prompts: bool = False
    format: Literal["json", "text"] | None = None

    def problems(self) -> Problems:
        return []


class MetricsSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """``GET /metrics`` (§10)."""

    public: bool = True

    def problems(self) -> Problems:
        return []


class PlaygroundSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """The chat page at ``/`` (§11)."""

    enabled: bool = True

    def problems(self) -> Problems:
        return []


class StreamsSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """Resumable streams (§13); ``redis_url`` empty means ``rate_limit.redis_url``."""

    resume: bool = False
    redis_url: str = ""

    def problems(self) -> Problems:
        if self.redis_url and not _REDIS_URL.fullmatch(self.redis_url):
            return [("redis_url", "is not a redis:// URL like redis://127.0.0.1:6379/0")]
        return []


def _is_argon2_hash(text: str) -> bool:
    try:
        extract_parameters(text)  # parses only; no hashing
    except InvalidHashError:
        return False
    return True


def _is_sample_password(password: str) -> bool:
    if not password.startswith("$argon2"):
        return password == SAMPLE_PASSWORD
    try:  # one slow hash at start-up, in production only
        return PasswordHasher().verify(password, SAMPLE_PASSWORD)
    except (InvalidHashError, VerificationError):
        return False


#: Section name -> its Struct, as they appear in ``Settings``.
SECTIONS: Final = {
    "database": DatabaseSettings,
    "history": HistorySettings,
    "auth": AuthSettings,
    "rate_limit": RateLimitSettings,
    "websocket": WebSocketSettings,
    "logging": LoggingSettings,
    "metrics": MetricsSettings,
    "playground": PlaygroundSettings,
    "streams": StreamsSettings,
}
