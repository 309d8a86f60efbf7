"""Refusing to start, from inside the lifespan, with one line and no traceback.

A check that needs I/O (a database at the wrong schema revision) runs in the lifespan, where an
exception reaches the server as Litestar's formatted traceback. :func:`refuse_startup` raises
:class:`StartupRefused`, and a filter on uvicorn's error log turns the record that carries it into
the one line, so an operator sees ``agent-backend: …`` and the server's own "startup failed".
"""

from __future__ import annotations

import logging
from typing import Final, NoReturn

__all__ = ("StartupRefused", "refuse_startup")

_SERVER_LOGGERS: Final = ("uvicorn.error",)


class StartupRefused(Exception):
    """The service cannot start; ``str()`` is the one line to show."""


class _OneLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        marker = f"{StartupRefused.__module__}.{StartupRefused.__qualname__}: "
        if marker in text:
            record.msg = text.rsplit(marker, 1)[1].strip().splitlines()[0]
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


_filter: Final = _OneLine()


def refuse_startup(line: str) -> NoReturn:
    """Stop start-up with ``line`` as the whole message (raised from the lifespan).

    Raises:
        StartupRefused: always.
    """
    for name in _SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if _filter not in logger.filters:
            logger.addFilter(_filter)
    raise StartupRefused(line)
