"""Credentials out of the server's own debug logs: a WebSocket handshake's headers and subprotocols.

uvicorn logs a WebSocket handshake's request headers at ``debug`` (``< authorization: …``) and
the ASGI scope at ``trace``, subprotocols included, where ``bearer.<key>`` travels. The filter
here rewrites such records before any handler sees them; it runs only for records that are
logged at all, so it costs nothing at the usual levels.
"""

from __future__ import annotations

import logging
import re
from typing import Final

__all__ = ("SecretRedaction", "install_log_redaction")

_PATTERNS: Final = (
    (re.compile(r"(bearer\.)[^\s'\",\]\)]+", re.IGNORECASE), r"\1***"),
    (re.compile(r"((?:proxy-)?authorization|x-api-key|cookie)(\s*:\s*)\S.*", re.IGNORECASE), r"\1\2***"),
)
#: The loggers a server writes handshake details to (uvicorn's, for every WebSocket implementation).
_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.asgi")


class SecretRedaction(logging.Filter):
    """Replaces credential values in a record's message with ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return True
        redacted = message
        for pattern, replacement in _PATTERNS:
            redacted = pattern.sub(replacement, redacted)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install_log_redaction() -> None:
    """Put :class:`SecretRedaction` on the server's loggers (once; safe to call again)."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, SecretRedaction) for existing in logger.filters):
            logger.addFilter(SecretRedaction())
