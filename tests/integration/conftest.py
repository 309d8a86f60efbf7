"""Real sockets: the fake upstream and the app under uvicorn, on free loopback ports."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import uvicorn

from app import create_app
from app.config import Limits, Settings
from app.sections import DatabaseSettings
from providers import OpenAIConfig
from providers.http11_transport import HTTP11Transport
from tests.fake_upstream import FakeUpstream

NO_DATABASE = DatabaseSettings(enabled=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveService:
    """The app served by uvicorn on the test's own event loop."""

    def __init__(
        self, settings: Settings, *, port: int | None = None, wrap: Callable[[Any], Any] | None = None
    ) -> None:
        """``wrap``: ASGI middleware around the app (a test's stand-in for authentication, say)."""
        self.port = port or free_port()
        self.app = create_app(settings)
        served = wrap(self.app) if wrap is not None else self.app
        config = uvicorn.Config(
            served, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", access_log=False
        )
        self.server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.create_task(self.server.serve())
        for _ in range(1000):  # start-up may migrate a database
            if self.server.started:
                return
            if self._task.done():
                self._task.result()
                raise RuntimeError("uvicorn stopped during start-up")
            await asyncio.sleep(0.01)
        raise RuntimeError("uvicorn did not start within 10 s")

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await asyncio.wait_for(self._task, 15)

    def upstream_connections_in_use(self) -> int:
        """Upstream connections of the app's shared transport that are busy with a response."""
        transport: HTTP11Transport = self.app.state.upstream_transport
        return transport.responses_open


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        yield up


ServiceFactory = Callable[..., Any]


@pytest.fixture
async def start_service(upstream: FakeUpstream) -> AsyncIterator[ServiceFactory]:
    started: list[LiveService] = []

    async def start(limits: Limits | None = None, **provider: Any) -> LiveService:
        config = OpenAIConfig(**{"base_url": upstream.base_url, "model": "fake-model", **provider})
        # Stateless: the persistence tests (tests/history) configure their own databases.
        service = LiveService(Settings(providers={"local": config}, limits=limits or Limits(), database=NO_DATABASE))
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


@pytest.fixture
async def service(start_service: ServiceFactory) -> LiveService:
    live: LiveService = await start_service()
    return live


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=30, limits=limits) as c:
        yield c
