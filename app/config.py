"""Settings: configuration layers in, one validated ``Settings`` struct out, or one clear error line.

Layers, lowest first: ``settings.toml`` ``[default]``, ``settings.toml`` ``[<APP_ENV>]``,
``.secrets.toml`` (same sections), ``.env`` in the working directory, ``AGENT_*`` variables.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec
from dynaconf import Dynaconf

from app.sections import (
    SECTIONS,
    AuthSettings,
    DatabaseSettings,
    HistorySettings,
    LoggingSettings,
    MetricsSettings,
    PlaygroundSettings,
    RateLimitSettings,
    StreamsSettings,
    WebSocketSettings,
)
from providers.config import OpenAIConfig, display_url
from providers.kinds import DEFAULT_KIND, PROVIDER_KINDS, ProviderConfig

__all__ = ("ENVIRONMENTS", "ConfigError", "Limits", "Settings", "load_settings")

ENVIRONMENTS: Final = ("development", "testing", "production")
PROJECT_ROOT: Final = Path(__file__).resolve().parent.parent
_LOG_LEVELS: Final = ("critical", "error", "warning", "info", "debug")
_STRING_KEYS: Final = frozenset(
    {
        "host",
        "default_provider",
        "kind",
        "base_url",
        "api_key",
        "model",
        "url",
        "redis_url",
        "username",
        "password",
        "key_prefix",
    }
)
_SECRET_KEYS: Final = frozenset(
    {"api_key", "password", "secret", "token", "url", "redis_url", "api_keys", "extra_headers"}
)
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_LIST_KEYS: Final = ("models", "fallback")
_MSGSPEC_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


class ConfigError(Exception):
    """A configuration that cannot work; ``str()`` is one line that names the key."""


class Limits(msgspec.Struct, kw_only=True):
    """Bounds on what one request may ask for."""

    max_message_chars: int = 32_000
    max_prompt_chars: int = 200_000
    max_body_bytes: int = 1_048_576
    max_upstream_connections: int = 1_000


class Settings(msgspec.Struct, kw_only=True):
    """Everything the service reads from configuration."""

    env: str = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    cors_origins: list[str] = msgspec.field(default_factory=lambda: ["http://localhost:5173"])
    default_provider: str = "local"
    providers: dict[str, ProviderConfig] = msgspec.field(default_factory=lambda: {"local": OpenAIConfig()})
    limits: Limits = msgspec.field(default_factory=Limits)
    log_level: str = "info"
    models_cache_seconds: float = 30.0
    shutdown_grace_seconds: float = 30.0
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    history: HistorySettings = msgspec.field(default_factory=HistorySettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    rate_limit: RateLimitSettings = msgspec.field(default_factory=RateLimitSettings)
    websocket: WebSocketSettings = msgspec.field(default_factory=WebSocketSettings)
    logging: LoggingSettings = msgspec.field(default_factory=LoggingSettings)
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)
    playground: PlaygroundSettings = msgspec.field(default_factory=PlaygroundSettings)
    streams: StreamsSettings = msgspec.field(default_factory=StreamsSettings)

    def __post_init__(self) -> None:
        _check(self)


def env_var(key: str) -> str:
    """The environment variable that sets a dotted settings key (a list item's index is not part of it)."""
    return "AGENT_" + re.sub(r"\[[^\]]*\]", "", key).replace(".", "__").upper()


def _fail(key: str, problem: str) -> ConfigError:
    return ConfigError(f"configuration error: {key} ({env_var(key)}): {problem}")


def _check(settings: Settings) -> None:
    if settings.env not in ENVIRONMENTS:
        raise ConfigError(
            f"configuration error: APP_ENV: unknown environment {settings.env!r}"
            f" (expected one of {', '.join(ENVIRONMENTS)})"
        )
    host_problem = _host_problem(settings.host) if settings.host else "is empty"
    if host_problem:
        raise _fail("host", f"{settings.host!r} {host_problem} (use 127.0.0.1, or 0.0.0.0 for every interface)")
    if not 1 <= settings.port <= 65535:
        raise _fail("port", f"{settings.port} is not a TCP port (1-65535)")
    if settings.log_level.lower() not in _LOG_LEVELS:
        raise _fail("log_level", f"{settings.log_level!r} is not one of {', '.join(_LOG_LEVELS)}")
    for origin in settings.cors_origins:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            raise _fail("cors_origins", f"{origin!r} is not an origin like http://localhost:5173 (no path)")
    if not settings.providers:
        raise _fail("providers", "no provider is configured")
    for name, provider in settings.providers.items():
        _check_provider(name, provider)
    configured = {name.lower() for name in settings.providers}
    for name, provider in settings.providers.items():
        for entry in provider.fallback:
            problem = _fallback_problem(entry, configured)
            if problem:
                raise _fail(f"providers.{name}.fallback", problem)
    if settings.default_provider.lower() not in settings.providers:
        raise _fail(
            "default_provider",
            f"{settings.default_provider!r} is not a configured provider"
            f" (configured: {', '.join(sorted(settings.providers))})",
        )
    for field in ("max_message_chars", "max_prompt_chars", "max_body_bytes", "max_upstream_connections"):
        if getattr(settings.limits, field) < 1:
            raise _fail(f"limits.{field}", "must be at least 1")
    for field in ("models_cache_seconds", "shutdown_grace_seconds"):
        if getattr(settings, field) < 0:
            raise _fail(field, "must not be negative")
    for section in SECTIONS:
        for key, problem in getattr(settings, section).problems():
            raise _fail(f"{section}.{key}", problem)
    if settings.env == "production":
        for key, problem in settings.auth.production_problems():
            raise _fail(f"auth.{key}", problem)


_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def _host_problem(host: str) -> str | None:
    """Why ``host`` is neither an IP address nor a hostname, or ``None`` if it is one."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return None
    if not _HOSTNAME.fullmatch(host):
        return "is not an IP address or host name"
    if all(label.isdigit() for label in host.rstrip(".").split(".")):
        return "is not a valid IPv4 address"
    return None


def _base_url_problem(base_url: str) -> str | None:
    """Why ``base_url`` cannot work, without repeating secrets it may hold, or ``None``."""
    example = "an http(s) URL like http://localhost:1234/v1"
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL:
        return f"is not {example}"
    if url.scheme not in ("http", "https") or not url.host:
        return f"is not {example}"
    shown = display_url(base_url)
    if url.query or url.fragment:
        return f"must have no query string or fragment (requests go to {{base_url}}/chat/completions): {shown}"
    if url.port is not None and not 1 <= url.port <= 65535:
        return f"has port {url.port}, not a TCP port (1-65535): {shown}"
    host_problem = _host_problem(url.host)
    if host_problem:
        return f"host {url.host!r} {host_problem}: {shown}"
    return None


def _check_provider(name: str, provider: ProviderConfig) -> None:
    key = f"providers.{name}"
    problem = _base_url_problem(provider.base_url)
    if problem:
        raise _fail(f"{key}.base_url", problem)
    for field in ("connect_timeout_seconds", "timeout_seconds"):
        if getattr(provider, field) <= 0:
            raise _fail(f"{key}.{field}", "must be more than 0")
    if provider.max_tokens < 1:
        raise _fail(f"{key}.max_tokens", "must be at least 1")
    if any(not model.strip() for model in provider.models):
        raise _fail(f"{key}.models", "has an empty model id")
    for header, value in provider.extra_headers.items():
        # The value is a secret: say which header is wrong, never what it holds.
        if not _HEADER_NAME.fullmatch(header):
            raise _fail(f"{key}.extra_headers", f"{header!r} is not an HTTP header name")
        if "\r" in value or "\n" in value:
            raise _fail(f"{key}.extra_headers", f"the value of {header!r} contains a line break")


def _fallback_problem(entry: str, configured: set[str]) -> str | None:
    """Why a ``fallback`` entry cannot be followed, or ``None``."""
    shape = 'entries are "<provider>" or "<provider>/<model>"'
    head, slash, rest = entry.strip().partition("/")
    if not head:
        return f"{entry!r} names no provider; {shape}"
    if head.lower() not in configured:
        return f"{entry!r} names no configured provider (configured: {', '.join(sorted(configured))}); {shape}"
    if slash and not rest:
        return f"{entry!r} names provider {head!r} but no model; {shape}"
    return None


def _header_values(headers: dict[str, Any], key: str) -> dict[str, Any]:
    """Header values as strings: from the environment ``{"X-Token" = 123}`` arrives as a number."""
    values: dict[str, Any] = {}
    for name, value in headers.items():
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        elif not isinstance(value, str):
            raise _fail(key, f"the value of {name!r} must be a string (quote it)")
        values[name] = value
    return values


def _table(value: Any, key: str) -> Any:
    """A table given as text (an environment variable that is not TOML, e.g. JSON), decoded; else as it is."""
    if not isinstance(value, str):
        return value
    try:
        decoded = msgspec.json.decode(value)
    except msgspec.DecodeError:
        decoded = None
    if not isinstance(decoded, dict):
        raise _fail(key, 'must be a table of header names and values, like {"X-Token" = "…"}')
    return _lower_keys(decoded)


def _lower_keys(value: Any) -> Any:
    """Lower-case every mapping key; Dynaconf upper-cases some and keeps others as written."""
    if not isinstance(value, dict):
        return value
    lowered: dict[str, Any] = {}
    for key, item in value.items():
        name = str(key).lower()
        item = _lower_keys(item)
        if isinstance(lowered.get(name), dict) and isinstance(item, dict):
            lowered[name] = {**lowered[name], **item}
        else:
            lowered[name] = item
    return lowered


def _as_strings(data: dict[str, Any]) -> dict[str, Any]:
    """Env values are parsed as TOML, so ``AGENT_…__API_KEY=1234`` arrives as an int: undo that."""
    return {
        key: str(value)
        if key in _STRING_KEYS and isinstance(value, int | float) and not isinstance(value, bool)
        else value
        for key, value in data.items()
    }


def _convert(data: Any, kind: type[Any], prefix: str) -> Any:
    try:
        return msgspec.convert(data, kind, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _MSGSPEC_PATH.search(message)
        where = match.group("path") if match else ""
        key = ".".join(part for part in (prefix, where) if part)
        problem = _MSGSPEC_PATH.sub("", message).replace("Expected", "expected")
        value = data.get(where) if isinstance(data, dict) and where.isidentifier() else None
        if value is not None and where not in _SECRET_KEYS:
            problem += f" {value!r}"
        raise _fail(key or "settings", problem) from None


def settings_from_mapping(raw: dict[str, Any], env: str) -> Settings:
    """Validate an already-layered mapping (keys in any case) into ``Settings``.

    Raises:
        ConfigError: a key has a value that cannot work.
    """
    data = _lower_keys(raw)
    known = set(Settings.__struct_fields__)
    top = _as_strings({key: value for key, value in data.items() if key in known and key != "providers"})
    for section in SECTIONS:
        if isinstance(top.get(section), dict):
            top[section] = _as_strings(top[section])
    origins = top.get("cors_origins")
    if isinstance(origins, str):  # AGENT_CORS_ORIGINS=http://a,http://b
        top["cors_origins"] = [part.strip() for part in origins.split(",") if part.strip()]
    limits = top.get("rate_limit")
    if isinstance(limits, dict) and isinstance(limits.get("trusted_proxies"), str):  # =10.0.0.1,10.0.0.2
        limits["trusted_proxies"] = [part.strip() for part in limits["trusted_proxies"].split(",") if part.strip()]
    providers_raw = data.get("providers", {"local": {}})
    if not isinstance(providers_raw, dict):
        raise _fail("providers", "must be a table of named providers")
    providers: dict[str, ProviderConfig] = {}
    for name, provider in providers_raw.items():
        if not isinstance(provider, dict):
            raise _fail(f"providers.{name}", "must be a table (kind, base_url, model, …)")
        fields = _as_strings(provider)
        kind = fields.setdefault("kind", DEFAULT_KIND)
        if kind not in PROVIDER_KINDS:
            raise _fail(
                f"providers.{name}.kind",
                f"unknown provider kind {kind!r} (known: {', '.join(sorted(PROVIDER_KINDS))})",
            )
        if "extra_headers" in fields:
            headers = _table(fields["extra_headers"], f"providers.{name}.extra_headers")
            fields["extra_headers"] = (
                _header_values(headers, f"providers.{name}.extra_headers") if isinstance(headers, dict) else headers
            )
        for list_key in _LIST_KEYS:  # AGENT_PROVIDERS__LOCAL__FALLBACK=gpu,laptop
            if isinstance(fields.get(list_key), str):
                fields[list_key] = [part.strip() for part in fields[list_key].split(",") if part.strip()]
        providers[name] = _convert(fields, PROVIDER_KINDS[kind].config, f"providers.{name}")
    settings: Settings = _convert({**top, "providers": providers, "env": env}, Settings, "")
    return settings


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: tables merge key by key; lists and plain values replace."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _file_layers(settings_dir: Path, env: str) -> dict[str, Any]:
    """``settings.toml`` then ``.secrets.toml``, each ``[default]`` then ``[<env>]``."""
    merged: dict[str, Any] = {}
    for name in ("settings.toml", ".secrets.toml"):
        path = settings_dir / name
        if not path.is_file():
            continue
        try:
            document = tomllib.loads(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"configuration error: {name}: {exc}") from None
        for section in ("default", env):
            table = document.get(section, {})
            if not isinstance(table, dict):
                raise ConfigError(f"configuration error: {name}: [{section}] must be a table")
            table.pop("dynaconf_merge", None)  # merging is what we always do; older files carry it
            merged = _deep_merge(merged, _lower_keys(table))
    return merged


def _env_layer(workdir: Path) -> dict[str, Any]:
    """``.env`` (loaded into the environment) and ``AGENT_*`` variables, nested by ``__``."""
    dotenv = workdir / ".env"
    try:
        layer = Dynaconf(
            envvar_prefix="AGENT",
            settings_files=[],
            environments=False,
            load_dotenv=dotenv.is_file(),
            dotenv_path=str(dotenv),
            merge_enabled=False,
            root_path=str(workdir),
        ).as_dict()
    except Exception as exc:  # e.g. an unreadable .env
        raise ConfigError(f"configuration error: environment: {exc}") from None
    for internal in [key for key in layer if key.endswith("_FOR_DYNACONF") or key == "LOAD_DOTENV"]:
        layer.pop(internal)
    data: dict[str, Any] = _lower_keys(layer)
    # Values are parsed as TOML, which is right for ports and lists but turns an API key like
    # "1e5" or "0x1F" into a number: string settings take the variable's own text instead.
    for name, text in os.environ.items():
        path = name[len("AGENT_") :].lower().split("__") if name.startswith("AGENT_") else []
        if not path or path[-1] not in _STRING_KEYS:
            continue
        table = data
        for part in path[:-1]:
            inner = table.get(part)
            table = inner if isinstance(inner, dict) else {}
        if path[-1] in table and not isinstance(table[path[-1]], str):
            table[path[-1]] = text
    return data


def load_settings(workdir: Path | None = None) -> Settings:
    """Read every configuration layer and validate the result.

    ``settings.toml`` and ``.secrets.toml`` are read from the working directory when it has a
    ``settings.toml``, else from the project root; ``.env`` always from the working directory.
    Tables merge across layers key by key; lists and plain values replace. (Dynaconf reads the
    environment layers; its file merging either replaces whole tables or appends to lists,
    dynaconf#999, so the files are layered here.)

    Raises:
        ConfigError: the configuration cannot work; the message is one line naming the key.
    """
    workdir = workdir or Path.cwd()
    environment = _env_layer(workdir)  # first: .env may set APP_ENV
    env = os.environ.get("APP_ENV", "development").strip().lower() or "development"
    if env not in ENVIRONMENTS:
        raise ConfigError(
            f"configuration error: APP_ENV: unknown environment {env!r} (expected one of {', '.join(ENVIRONMENTS)})"
        )
    settings_dir = workdir if (workdir / "settings.toml").is_file() else PROJECT_ROOT
    return settings_from_mapping(_deep_merge(_file_layers(settings_dir, env), environment), env)
