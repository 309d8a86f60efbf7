"""Every error before a response starts becomes an RFC 9457 problem+json body with our ``code``.

The error classes themselves live in :mod:`providers.errors`; this module renders them and maps
Litestar's own exceptions (malformed JSON, validation, unknown route, body too large) and any
unexpected exception onto them, so that no input yields anything but the contract's format.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from app.schemas import Problem
from providers.errors import AgentError, InvalidRequest, NotFound, PayloadTooLarge

__all__ = ("EXCEPTION_HANDLERS", "PROBLEM_MEDIA_TYPE", "problem_response")

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
_encoder: Final = msgspec.json.Encoder()
logger = logging.getLogger("app.errors")


def problem_response(error: AgentError, headers: dict[str, str] | None = None) -> Response[bytes]:
    """The problem+json response for an error."""
    body = Problem(
        type=f"urn:agent-backend:error:{error.code}",
        title=error.title,
        status=error.status,
        detail=error.message,
        code=error.code,
    )
    headers = dict(headers or {})
    if error.retry_after:
        headers["Retry-After"] = error.retry_after
    return Response(
        content=_encoder.encode(body),
        status_code=error.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


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


def _on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    headers = dict(exc.headers or {})
    if status == 404:
        return problem_response(NotFound(f"no route for {request.method} {request.url.path}"), headers)
    if status == 413:
        return problem_response(PayloadTooLarge("the request body is larger than the configured limit"), headers)
    if status == 405:
        error = InvalidRequest(f"{request.method} is not allowed on {request.url.path}", status=405)
        return problem_response(error, headers)
    if isinstance(exc, ValidationException) or status == 400:
        return problem_response(InvalidRequest(_validation_detail(exc)), headers)
    if status >= 500:  # Litestar's own server errors (e.g. misconfiguration): no internals out
        logger.error("%s %s failed: %s", request.method, request.url.path, exc.detail)
        return problem_response(AgentError("internal error; the service log has the details", status=status), headers)
    return problem_response(InvalidRequest(exc.detail, status=status), headers)


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(AgentError("internal error; the service log has the details"))


EXCEPTION_HANDLERS: Final = {
    AgentError: _on_agent_error,
    HTTPException: _on_http_exception,
    Exception: _on_unexpected,
}
