"""The errors only the service raises, and how every error before a response starts is rendered.

The upstream errors live in :mod:`providers.errors`; the tree continues here with the codes that
come from the service itself (its requests, its credentials, its stores):

* ``AgentError`` (:mod:`providers.errors`; ``internal_error``, 500)
    * ``AppError`` (base of the service's own errors; may carry response headers)
        * ``InvalidRequest`` (``invalid_request``, 400; 405 for a wrong method)
        * ``PayloadTooLarge`` (``payload_too_large``, 413)
        * ``Unauthorized`` (``unauthorized``, 401 with ``WWW-Authenticate``; 403 from a guard)
        * ``NotFound`` (``not_found``, 404)
        * ``Conflict`` (``conflict``, 409, retryable)
        * ``StorageUnavailable`` (``storage_unavailable``, 503, retryable)
        * ``LimitsUnavailable`` (``limits_unavailable``, 503, retryable)
        * ``Busy`` (``busy``, WebSocket only, retryable)
        * ``ServerShutdown`` (``server_shutdown``, 503, retryable)

Each renders as an RFC 9457 problem+json body with the contract's ``code``. Litestar's own HTTP
exceptions (malformed JSON, validation, unknown route, wrong method, body too large, a guard's
401/403, a 429) are mapped by status through one table, and anything unexpected is a 500 whose
body shows no internals. No input yields anything but the contract's format.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from app.schemas import Problem
from providers.errors import AgentError, RateLimited

__all__ = (
    "EXCEPTION_HANDLERS",
    "PROBLEM_MEDIA_TYPE",
    "AppError",
    "Busy",
    "Conflict",
    "InvalidRequest",
    "LimitsUnavailable",
    "NotFound",
    "PayloadTooLarge",
    "ServerShutdown",
    "StorageUnavailable",
    "Unauthorized",
    "error_for_http_status",
    "problem_body",
    "problem_response",
)

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
_encoder: Final = msgspec.json.Encoder()
logger = logging.getLogger("app.errors")


class AppError(AgentError):
    """An error of the service's own; ``headers`` go out with its problem response."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, status=status, retry_after=retry_after)
        self.headers = dict(headers or {})


class InvalidRequest(AppError):
    code = "invalid_request"
    title = "Invalid request"
    default_status = 400


class PayloadTooLarge(AppError):
    code = "payload_too_large"
    title = "Payload too large"
    default_status = 413


class Unauthorized(AppError):
    code = "unauthorized"
    title = "Unauthorized"
    default_status = 401


class NotFound(AppError):
    code = "not_found"
    title = "Not found"
    default_status = 404


class Conflict(AppError):
    code = "conflict"
    title = "Conflict"
    default_status = 409
    retryable = True


class StorageUnavailable(AppError):
    code = "storage_unavailable"
    title = "Storage unavailable"
    default_status = 503
    retryable = True


class LimitsUnavailable(AppError):
    code = "limits_unavailable"
    title = "Rate limits unavailable"
    default_status = 503
    retryable = True


class Busy(AppError):
    code = "busy"
    title = "Busy"
    default_status = 409
    retryable = True


class ServerShutdown(AppError):
    code = "server_shutdown"
    title = "Server shutting down"
    default_status = 503
    retryable = True


def problem_body(error: AgentError) -> bytes:
    """The problem+json document for ``error``."""
    return _encoder.encode(
        Problem(
            type=f"urn:agent-backend:error:{error.code}",
            title=error.title,
            status=error.status,
            detail=error.message,
            code=error.code,
        )
    )


def problem_response(error: AgentError, headers: Mapping[str, str] | None = None) -> Response[bytes]:
    """The problem+json response for ``error``, with its own headers and ``Retry-After``."""
    merged = {**(headers or {}), **(error.headers if isinstance(error, AppError) else {})}
    if error.retry_after:
        merged["Retry-After"] = error.retry_after
    return Response(
        content=problem_body(error), status_code=error.status, media_type=PROBLEM_MEDIA_TYPE, headers=merged
    )


#: Litestar's own HTTP exceptions by status; any other 4xx is ``invalid_request`` with that status.
_BY_STATUS: Final[Mapping[int, type[AppError] | type[AgentError]]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    405: InvalidRequest,
    409: Conflict,
    413: PayloadTooLarge,
    429: RateLimited,
}


def error_for_http_status(status: int, message: str, headers: Mapping[str, str] | None = None) -> AgentError:
    """The contract's error for an HTTP status that Litestar (or a guard, or middleware) raised."""
    if status >= 500:
        return AgentError(message, status=status)
    kind = _BY_STATUS.get(status, InvalidRequest)
    retry_after = (headers or {}).get("Retry-After") or (headers or {}).get("retry-after")
    if issubclass(kind, AppError):
        extra = {k: v for k, v in (headers or {}).items() if k.lower() != "retry-after"}
        return kind(message, status=status, retry_after=retry_after, headers=extra)
    return kind(message, status=status, retry_after=retry_after or ("1" if kind is RateLimited else None))


def _on_agent_error(request: Request[Any, Any, Any], exc: AgentError) -> Response[bytes]:
    if exc.status >= 500:
        logger.warning("%s %s failed: %s: %s", request.method, request.url.path, exc.code, exc.message)
    return problem_response(exc)


def _validation_detail(exc: HTTPException) -> str:
    detail = exc.detail
    problems: list[str] = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if not isinstance(item, dict):
            continue
        message, key = str(item.get("message", "")), item.get("key")
        if key == "data" and message == "'data'":
            return 'the request body is empty: send a JSON object such as {"message": "Hello"}'
        problems.append(f"{key}: {message}" if key and key != "data" else message)
    return f"{detail}: {'; '.join(problems)}" if problems else detail


def _http_message(request: Request[Any, Any, Any], exc: HTTPException) -> str:
    status = exc.status_code
    if status == 404:
        return f"no route for {request.method} {request.url.path}"
    if status == 405:
        return f"{request.method} is not allowed on {request.url.path}"
    if status == 413:
        return "the request body is larger than the configured limit"
    if isinstance(exc, ValidationException) or status == 400:
        return _validation_detail(exc)
    return exc.detail


def _on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    if status >= 500:  # Litestar's own server errors (e.g. misconfiguration): no internals out
        logger.error("%s %s failed: %s", request.method, request.url.path, exc.detail)
        return problem_response(AgentError("internal error; the service log has the details", status=status))
    return problem_response(error_for_http_status(status, _http_message(request, exc), exc.headers))


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(AgentError("internal error; the service log has the details"))


EXCEPTION_HANDLERS: Final = {
    AgentError: _on_agent_error,
    HTTPException: _on_http_exception,
    Exception: _on_unexpected,
}
