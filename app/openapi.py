"""The OpenAPI document and its docs page, served entirely by the service (nothing from a CDN).

The docs page is Swagger UI from the ``swagger-ui-py`` package (a pinned release), whose files
are served under ``/schema/assets``; an offline laptop gets a working ``/schema``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

import swagger_ui
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router

from app.errors import PROBLEM_MEDIA_TYPE
from app.schemas import Problem

__all__ = ("DOCS_ASSETS_PATH", "docs_assets_router", "openapi_config", "problem_responses")

DOCS_ASSETS_PATH: Final = "/schema/assets"
_SWAGGER_FILES: Final = Path(swagger_ui.__file__).parent / "static"

#: What each problem status stands for, by the contract's codes.
_PROBLEMS: Final[Mapping[int, str]] = {
    400: "invalid_request or upstream_rejected",
    401: "unauthorized",
    404: "not_found or model_not_found",
    409: "conflict",
    413: "payload_too_large",
    429: "rate_limited, with Retry-After",
    500: "internal_error",
    502: "upstream_unavailable or upstream_protocol_error",
    503: "upstream_unavailable (the upstream said 503, or every upstream connection is busy), storage_unavailable,"
    " limits_unavailable or server_shutdown",
    504: "upstream_timeout",
}


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problem+json answers a route can give."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_MEDIA_TYPE,
            description=_PROBLEMS[status],
            generate_examples=False,
        )
        for status in statuses
    }


def openapi_config(version: str, description: str) -> OpenAPIConfig:
    """``/schema`` (Swagger UI, also at ``/schema/swagger``) and ``/schema/openapi.json``."""
    swagger = SwaggerRenderPlugin(
        js_url=f"{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{DOCS_ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{DOCS_ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{DOCS_ASSETS_PATH}/favicon-32x32.png'>",
        path=["/", "/swagger"],
    )
    return OpenAPIConfig(
        title="Agent Backend",
        version=version,
        description=description,
        path="/schema",
        render_plugins=[swagger],
    )


def docs_assets_router() -> Router:
    """The docs page's script, style sheet and icon, from the installed package."""
    return create_static_files_router(
        path=DOCS_ASSETS_PATH,
        directories=[_SWAGGER_FILES],
        include_in_schema=False,
        name="docs-assets",
        send_as_attachment=False,
    )
