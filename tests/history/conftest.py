"""Persistence fixtures: every test runs against SQLite and the real PostgreSQL, each in a database of its own.

PostgreSQL (127.0.0.1:5432, user ``postgres``) gets a fresh database per test, named after this
run, dropped afterwards; SQLite a file in the test's temporary directory. Where PostgreSQL does
not answer the PostgreSQL half is skipped — except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.config import Settings
from app.principal import Principal
from app.sections import DatabaseSettings, HistorySettings
from providers import OpenAIConfig
from tests.fake_upstream import FakeUpstream
from tests.integration.conftest import LiveService

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
RUN = uuid.uuid4().hex[:8]
_counter = iter(range(1_000_000))


def _pg_answers() -> str | None:
    host, port = "127.0.0.1", 5432
    try:
        with socket.create_connection((host, port), timeout=3):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def _in_thread(job: Callable[[], Awaitable[None]]) -> None:
    """Run a coroutine on a loop of its own (a sync fixture's teardown, whatever loop the test had)."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(job())  # type: ignore[arg-type]
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if failure:
        raise failure[0]


class PgDatabases:
    """Creates and drops this run's PostgreSQL databases."""

    def __init__(self) -> None:
        self.made: list[str] = []

    async def create(self) -> str:
        name = f"agb_test_{RUN}_{next(_counter)}"
        connection = await asyncpg.connect(PG_ADMIN, timeout=5)
        try:
            await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        finally:
            await connection.close()
        self.made.append(name)
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        return f"{base}/{name}"

    async def admin(self, sql: str) -> None:
        connection = await asyncpg.connect(PG_ADMIN, timeout=5)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    async def drop_all(self) -> None:
        for name in self.made:
            await self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.made.clear()


@pytest.fixture
def pg() -> Iterator[PgDatabases]:
    problem = _pg_answers()
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL at 127.0.0.1:5432 does not answer under CI=true: {problem}")
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 does not answer: {problem}")
    databases = PgDatabases()
    yield databases
    _in_thread(databases.drop_all)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'agent-backend.db'}"
    databases: PgDatabases = request.getfixturevalue("pg")
    return await databases.create()


class AsPrincipal:
    """Puts the principal named by ``X-Test-Principal`` where authentication will (``scope["user"]``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            for name, value in scope.get("headers", ()):
                if name == b"x-test-principal":
                    scope["user"] = Principal(value.decode(), "api_key")
        await self.app(scope, receive, send)


class HistoryService(LiveService):
    """The app (persistence on) served by uvicorn on the test's loop; ``X-Test-Principal`` names the principal."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, wrap=AsPrincipal)


StartHistory = Callable[..., Awaitable[HistoryService]]


def history_settings(upstream: FakeUpstream, url: str, **history: Any) -> Settings:
    return Settings(
        providers={"local": OpenAIConfig(base_url=upstream.base_url, model="fake-model")},
        database=DatabaseSettings(url=url),
        history=HistorySettings(**history),
    )


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        yield up


@pytest.fixture
async def start_history(upstream: FakeUpstream, database_url: str) -> AsyncIterator[StartHistory]:
    started: list[HistoryService] = []

    async def start(url: str | None = None, **history: Any) -> HistoryService:
        service = HistoryService(history_settings(upstream, url or database_url, **history))
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


Serve = Callable[[Settings], Awaitable[HistoryService]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start the app for given settings; every one started is stopped at the end."""
    started: list[HistoryService] = []

    async def start(settings: Settings) -> HistoryService:
        service = HistoryService(settings)
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30, trust_env=False) as c:
        yield c
