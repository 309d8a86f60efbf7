"""The request class: JSON bodies that Litestar's decoder chokes on become ``invalid_request``."""

from __future__ import annotations

from typing import Any

from litestar import Request

from app.errors import InvalidRequest

__all__ = ("JSONSafeRequest",)


class JSONSafeRequest(Request[Any, Any, Any]):
    """A ``Request`` whose ``json()`` turns every undecodable body into a 400.

    Litestar maps malformed JSON to a 400 itself, but lets two decoder errors escape as 500s:
    invalid UTF-8 inside a JSON string (``UnicodeDecodeError``) and nesting deeper than the
    decoder's recursion limit (``RecursionError``).
    """

    async def json(self) -> Any:
        try:
            return await super().json()
        except UnicodeDecodeError:
            raise InvalidRequest("the request body is not valid UTF-8 JSON") from None
        except RecursionError:
            raise InvalidRequest("the request body is nested too deeply") from None
