"""The HTTP/1.1 transport's tests run on both event loops: the stdlib's and uvloop, which the service runs on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import pytest

try:
    import uvloop
except ImportError:  # Windows: uvloop does not exist there, and the service runs on asyncio's loop
    uvloop = None  # type: ignore[assignment]

_BOTH_LOOPS = "test_http11_transport.py"


# optionalhook: the hook is pytest-asyncio 1.4+; before that these tests run on asyncio's loop only.
@pytest.hookimpl(optionalhook=True)
def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Callable[[], Any]]:
    factories: dict[str, Callable[[], Any]] = {"asyncio": asyncio.new_event_loop}
    if item.path.name == _BOTH_LOOPS and uvloop is not None:
        factories["uvloop"] = uvloop.new_event_loop
    return factories
