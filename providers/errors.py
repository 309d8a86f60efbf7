"""The error codes of the contract, as one exception hierarchy.

Every failure the service reports carries a ``code`` from the contract, an HTTP ``status`` for
when it happens before the response starts, and whether a retry may help. These are the errors
of talking to an upstream, which providers raise or yield; the errors only the service itself
raises (``invalid_request``, ``unauthorized``, ``conflict``, …) extend the tree in :mod:`app.errors`.

* ``AgentError`` (base; ``internal_error``, 500)
    * ``ModelNotFound`` (``model_not_found``, 404)
    * ``RateLimited`` (``rate_limited``, 429, retryable)
    * ``UpstreamUnavailable`` (``upstream_unavailable``, 502 or the upstream's 503, retryable)
    * ``UpstreamTimeout`` (``upstream_timeout``, 504, retryable)
    * ``UpstreamRejected`` (``upstream_rejected``, 400)
    * ``UpstreamProtocolError`` (``upstream_protocol_error``, 502)
    * ``StreamInterrupted`` (``stream_interrupted``, in-stream only, retryable)

Messages say what happened and what to do; they never contain a secret (see :func:`redact`).
"""

from __future__ import annotations

import re
from typing import ClassVar

__all__ = (
    "AgentError",
    "ModelNotFound",
    "RateLimited",
    "StreamInterrupted",
    "UpstreamProtocolError",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "error_for_status",
    "redact",
)


_SECRET_PREFIX = 8


class AgentError(Exception):
    """Base of every error the contract names; also the ``internal_error`` code itself."""

    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"
    default_status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, status: int | None = None, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status or self.default_status
        self.retry_after = retry_after


class ModelNotFound(AgentError):
    code = "model_not_found"
    title = "Model not found"
    default_status = 404


class RateLimited(AgentError):
    code = "rate_limited"
    title = "Rate limited"
    default_status = 429
    retryable = True


class UpstreamUnavailable(AgentError):
    code = "upstream_unavailable"
    title = "Upstream unavailable"
    default_status = 502
    retryable = True


class UpstreamTimeout(AgentError):
    code = "upstream_timeout"
    title = "Upstream timeout"
    default_status = 504
    retryable = True


class UpstreamRejected(AgentError):
    code = "upstream_rejected"
    title = "Upstream rejected the request"
    default_status = 400


class UpstreamProtocolError(AgentError):
    code = "upstream_protocol_error"
    title = "Upstream protocol error"
    default_status = 502


class StreamInterrupted(AgentError):
    code = "stream_interrupted"
    title = "Stream interrupted"
    default_status = 502
    retryable = True


def error_for_status(status: int, message: str, *, retry_after: str | None = None) -> AgentError:
    """Map an upstream HTTP status (or the status an upstream error object claims) to our error.

    Args:
        status: the upstream's status code.
        message: what to tell the user, already redacted.
        retry_after: the upstream's ``Retry-After`` value, if any.

    Returns:
        The error that the contract's table assigns to that status.
    """
    if status == 404:
        return ModelNotFound(message)
    if status == 429:
        return RateLimited(message, retry_after=retry_after or "1")
    if status == 503:
        return UpstreamUnavailable(message, status=503, retry_after=retry_after)
    if status >= 500:
        return UpstreamUnavailable(message)
    if status == 408:
        return UpstreamTimeout(message)
    return UpstreamRejected(message)


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Replace every secret in ``text`` with ``***`` (upstreams sometimes echo a key back).

    Matches ignore case, and a secret's first 8 characters followed by more non-space
    characters count as the secret too, so ``sk-abcdefgh...`` style truncations are caught.
    Redact before shortening a message, or a secret cut in two escapes both rules.
    """
    for secret in secrets:
        if not secret:
            continue
        text = re.sub(re.escape(secret), "***", text, flags=re.IGNORECASE)
        if len(secret) > _SECRET_PREFIX:
            text = re.sub(re.escape(secret[:_SECRET_PREFIX]) + r"\S*", "***", text, flags=re.IGNORECASE)
    return text
