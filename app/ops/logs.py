"""Structured log lines: JSON in production, ``key=value`` text elsewhere, each naming its request.

Every record carries the id of the request it was logged for (a context variable that the
request-id middleware sets; tasks a request starts inherit it). Fields go in through
``extra={"fields": {...}}``; the formatter drops none and adds none but the basics. Nothing here
logs prompt or answer text: the callers decide that, and by default they do not.
"""

from __future__ import annotations

import contextvars
import copy
import json
import logging
import time
from typing import Any, Final

from litestar.logging import LoggingConfig
from litestar.logging.config import default_handlers

__all__ = ("JSONFormatter", "RequestIdFilter", "TextFormatter", "logging_config", "request_id")

#: The id of the request being served in this context ("-" outside any request).
request_id: Final = contextvars.ContextVar("request_id", default="-")

_NOISY: Final = ("httpx", "httpcore")


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request's id, in the thread that logs it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request id, message, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
            "pid": record.process,
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``LEVEL time logger [request id] message key=value …`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        parts = [f"{record.levelname:<7} {stamp} {record.name} [{getattr(record, 'request_id', '-')}]"]
        parts.append(record.getMessage())
        parts.extend(f"{key}={value}" for key, value in _fields(record).items())
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def logging_config(level: str, style: str) -> LoggingConfig:
    """Litestar's logging configuration, with our formatter (``json`` or ``text``) for every line.

    uvicorn's loggers go through the same handler, so that all of a process's lines share one
    format; uvicorn's access log is off (the service writes its own line per request).
    """
    handlers = copy.deepcopy(default_handlers)
    for handler in handlers.values():
        handler["level"] = "NOTSET"  # the loggers' levels decide (uvicorn's --log-level trace included)
        if "formatter" in handler:
            handler["formatter"] = "agent"
    handlers["queue_listener"]["filters"] = ["request_id"]
    through_ours = {"handlers": ["queue_listener"], "propagate": False}
    return LoggingConfig(
        formatters={"agent": {"()": JSONFormatter if style == "json" else TextFormatter}},
        filters={"request_id": {"()": RequestIdFilter}},
        handlers=handlers,
        root={"level": level.upper(), "handlers": ["queue_listener"]},
        log_exceptions="never",  # our handlers log what deserves it, once
        loggers={
            "litestar": {"level": "INFO", **through_ours},
            "uvicorn": through_ours,  # its level stays what uvicorn's --log-level made it
            "uvicorn.error": through_ours,
            "uvicorn.access": {"level": "WARNING", **through_ours},
            # httpx logs every upstream request at INFO; the request line already says enough.
            **{name: {"level": "WARNING"} for name in _NOISY},
        },
    )
