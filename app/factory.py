"""``create_app``: wiring only, no I/O (``litestar run`` calls it twice)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.logging import LoggingConfig

from app.chat import ChatFeature, ChatPipeline, ChatPlan, ChatRequest
from app.cli import HostPortFromSettings
from app.config import Settings, load_settings
from app.cors import PreflightRefusals
from app.dependencies import DEPENDENCIES
from app.errors import EXCEPTION_HANDLERS
from app.health import health, health_head
from app.lifespan import upstream_client
from app.models import ModelCatalog
from app.models_controller import ModelsController
from app.openapi import docs_assets_router, openapi_config
from app.request import JSONSafeRequest
from app.transports.ndjson import ChatController
from providers.registry import ProviderRegistry

__all__ = ("create_app",)

_VERSION = "0.1.0"


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
    cors = CORSConfig(
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Content-Type", "Authorization", "X-API-Key", "X-Request-ID"],
        expose_headers=["Retry-After", "X-Request-ID"],
        max_age=600,
    )
    app = Litestar(
        # On a router, not the app: app-level dependencies that read the body would make the
        # OpenAPI document claim that every route (even GET /health) takes a ChatRequest.
        route_handlers=[
            Router("/", route_handlers=[ChatController], dependencies={**DEPENDENCIES, **(dependencies or {})}),
            ModelsController,
            health,
            health_head,
            docs_assets_router(),
        ],
        state=State({"settings": settings, "registry": registry, "extra_features": tuple(features)}),
        lifespan=[upstream_client],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        cors_config=cors,
        request_max_body_size=settings.limits.max_body_bytes,
        request_class=JSONSafeRequest,
        openapi_config=openapi_config(
            _VERSION, "Relays a local LLM server's streamed answer to the browser as NDJSON."
        ),
        logging_config=LoggingConfig(
            root={"level": settings.log_level.upper(), "handlers": ["queue_listener"]},
            log_exceptions="never",  # our handlers log what deserves it, once
            loggers={
                "litestar": {"level": "INFO", "handlers": ["queue_listener"], "propagate": False},
                # httpx logs every upstream request at INFO; the access log already has one line each.
                "httpx": {"level": "WARNING"},
                "httpcore": {"level": "WARNING"},
            },
        ),
        plugins=[HostPortFromSettings(settings)],
        signature_namespace={
            "ChatPlan": ChatPlan,
            "ChatPipeline": ChatPipeline,
            "ChatRequest": ChatRequest,
            "ModelCatalog": ModelCatalog,
        },
    )
    # Litestar answers a refused CORS preflight with text/plain from inside its own middleware.
    app.asgi_handler = PreflightRefusals(app.asgi_handler, cors)
    return app


def load_settings_or_exit() -> Settings:
    """Load settings; on a bad configuration print one line and exit (no traceback)."""
    from app.config import ConfigError

    try:
        return load_settings()
    except ConfigError as exc:
        logging.getLogger("app").debug("bad configuration", exc_info=True)
        raise SystemExit(f"agent-backend: {exc}") from None
