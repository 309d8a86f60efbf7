"""The app under uvicorn for a browser test, configured per test, its ``local`` provider the fake upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from app.config import Settings
from providers import OpenAIConfig
from tests.fake_upstream import FakeUpstream
from tests.integration.conftest import NO_DATABASE, LiveService

__all__ = ("LiveFactory", "live")

LiveFactory = Callable[..., Coroutine[Any, Any, LiveService]]


@pytest.fixture
async def live(upstream: FakeUpstream) -> AsyncIterator[LiveFactory]:
    """``await live(port=…, **settings)`` starts one; every one started is stopped after the test."""
    started: list[LiveService] = []

    async def start(*, port: int | None = None, **settings: Any) -> LiveService:
        provider = OpenAIConfig(base_url=upstream.base_url, model="fake-model")
        settings.setdefault("database", NO_DATABASE)  # never the working directory's SQLite file
        running = LiveService(Settings(providers={"local": provider}, **settings), port=port)
        await running.start()
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop()
