"""``create_app``: wiring only, no I/O (``litestar run`` calls it twice)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence

from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide

from app.auth import auth_middleware, install_log_redaction
from app.chat import ChatFeature, ChatPipeline, ChatPlan, ChatRequest
from app.cli import HostPortFromSettings
from app.config import Settings, load_settings
from app.cors import PreflightRefusals
from app.dependencies import DEPENDENCIES
from app.errors import EXCEPTION_HANDLERS
from app.health import health, health_head
from app.history import ConversationController, database_plugin
from app.lifespan import upstream_client
from app.limits import RateLimits
from app.models import ModelCatalog
from app.models_controller import ModelsController
from app.openapi import docs_assets_router, openapi_config
from app.ops.logs import logging_config
from app.ops.metrics import MetricsController, metrics_config
from app.ops.ready import Readiness, ready
from app.ops.requests import RequestLog
from app.playground import playground_routes
from app.request import JSONSafeRequest
from app.streams.routes import StreamsController
from app.transports.ndjson import ChatController
from app.transports.ui_chat import UIChatController
from app.transports.websocket import FRAMES_DOC, chat_socket
from providers.registry import ProviderRegistry

__all__ = ("create_app",)

_VERSION = "0.1.0"
_DESCRIPTION = "Relays a local LLM server's streamed answer to the browser as NDJSON.\n" + FRAMES_DOC


def create_app(
    settings: Settings | None = None,
    *,
    registry: ProviderRegistry | None = None,
    dependencies: Mapping[str, Provide] | None = None,
    features: Sequence[ChatFeature] = (),
) -> Litestar:
    """Build the application.

    Args:
        settings: the configuration; loaded from the settings files and environment if not given.
        registry: providers to use instead of building them from ``settings`` (tests).
        dependencies: dependency overrides by name (tests).
        features: chat features to add to the ones the settings turn on (tests).

    Returns:
        The Litestar app; its lifespan opens the shared upstream client and the chat pipeline.
    """
    if settings is None:
        settings = load_settings_or_exit()
    install_log_redaction()  # WebSocket handshakes carry keys; the server logs them at debug
    # Rate limits: counters in memory, or a Redis client that connects on first use (no I/O here).
    limits = RateLimits(settings.rate_limit) if settings.rate_limit.enabled else None
    cors = CORSConfig(
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Content-Type", "Authorization", "X-API-Key", "X-Request-ID"],
        expose_headers=["Retry-After", "X-Request-ID"],
        max_age=600,
    )
    database = database_plugin(settings)  # None when persistence is off
    app = Litestar(
        # On a router, not the app: app-level dependencies that read the body would make the
        # OpenAPI document claim that every route (even GET /health) takes a ChatRequest.
        route_handlers=[
            Router(
                "/",
                route_handlers=[ChatController, UIChatController, StreamsController, chat_socket],
                dependencies={**DEPENDENCIES, **(dependencies or {})},
            ),
            ModelsController,
            ConversationController,
            health,
            health_head,
            ready,
            MetricsController,
            docs_assets_router(),
            *playground_routes(settings.playground.enabled),
        ],
        state=State(
            {
                "settings": settings,
                "registry": registry,
                "extra_features": tuple(features),
                "open_sockets": Counter(),
                "socket_sessions": set(),
                "readiness": Readiness(),
                "rate_limits": limits,
                "database": database,
            }
        ),
        lifespan=[upstream_client],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        cors_config=cors,
        request_max_body_size=settings.limits.max_body_bytes,
        request_class=JSONSafeRequest,
        openapi_config=openapi_config(_VERSION, _DESCRIPTION),
        logging_config=logging_config(settings.log_level, _log_format(settings)),
        # Prometheus outermost, so that refused requests (401, 429) are counted by route too; then
        # authentication, only when it is on: with it off everyone is anonymous.
        middleware=[
            metrics_config().middleware,
            *([auth_middleware(settings, limits)] if settings.auth.enabled else []),
        ],
        plugins=[HostPortFromSettings(settings), *([database] if database else [])],
        signature_namespace={
            "ChatPlan": ChatPlan,
            "ChatPipeline": ChatPipeline,
            "ChatRequest": ChatRequest,
            "ModelCatalog": ModelCatalog,
        },
    )
    # Outermost: every response gets its request id and its log line, a refused CORS preflight
    # included (Litestar answers those with text/plain from inside its own middleware).
    app.asgi_handler = RequestLog(PreflightRefusals(app.asgi_handler, cors))
    return app


def _log_format(settings: Settings) -> str:
    """``logging.format``, or by environment: JSON lines in production, text elsewhere."""
    return settings.logging.format or ("json" if settings.env == "production" else "text")


def load_settings_or_exit() -> Settings:
    """Load settings; on a bad configuration print one line and exit (no traceback)."""
    from app.config import ConfigError

    try:
        return load_settings()
    except ConfigError as exc:
        logging.getLogger("app").debug("bad configuration", exc_info=True)
        raise SystemExit(f"agent-backend: {exc}") from None
