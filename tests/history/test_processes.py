"""Persistence across processes (CONTRACT §6): the service as operators run it, on SQLite and PostgreSQL.

Each service is its own process (configured by ``AGENT_*`` only) on one shared database: a
process killed mid-answer, a claim contested from a second process, a conversation continued
on another, the migrations through ``litestar database``, and start-up in each environment.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from app.auth.credentials import key_hash
from tests.fake_upstream import FakeUpstream, Reply, sse_chunks
from tests.history.helpers import chat, meta_of, wait_for_status
from tests.service_process import REPO_ROOT, ServiceProcess, clean_env, free_port, start_service_process

LITESTAR = str(Path(sys.executable).parent / "litestar")
CHECKPOINT = 0.3
# Production refuses to start without a credential: one key, for the processes started there.
OPS_KEY = "agb_history-tests-ops-key"
OPS_CREDENTIAL = {"AGENT_AUTH__API_KEYS__OPS": key_hash(OPS_KEY)}

Spawn = Callable[..., Awaitable[ServiceProcess]]


@pytest.fixture
async def spawn(upstream: FakeUpstream, database_url: str, tmp_path: Path) -> AsyncIterator[Spawn]:
    started: list[ServiceProcess] = []

    async def start(name: str, env: str = "testing", **extra: str) -> ServiceProcess:
        settings = clean_env(
            APP_ENV=env,
            AGENT_PROVIDERS__LOCAL__BASE_URL=upstream.base_url,
            AGENT_PROVIDERS__LOCAL__MODEL="fake-model",
            AGENT_DATABASE__URL=database_url,
            AGENT_HISTORY__CHECKPOINT_SECONDS=str(CHECKPOINT),
            **extra,
        )
        process = await start_service_process(tmp_path / f"{name}.log", settings)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


async def test_a_killed_process_leaves_its_answer_interrupted_with_the_last_checkpoint(
    spawn: Spawn, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.on(
        "endless",
        Reply(writes=sse_chunks(["saved", " before", " death"], finish_reason=None, done=False), hold_open=True),
    )
    first = await spawn("first")
    received: list[str] = []
    async with client.stream("POST", f"{first.url}/chat", json={"message": "go", "model": "endless"}) as r:
        lines = r.aiter_lines()
        meta = json.loads(await anext(lines))["meta"]
        while len(received) < 3:
            received.append(json.loads(await anext(lines))["delta"])
        await asyncio.sleep(CHECKPOINT * 2.5)  # a checkpoint has the text
        first.signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
    second = await spawn("second")
    cid = meta["conversation_id"]
    answer = await wait_for_status(client, second.url, cid, "interrupted", within=CHECKPOINT * 3 + 5)
    assert answer["id"] == meta["message_id"]
    assert answer["content"] == "".join(received) == "saved before death"
    # The dead answer no longer holds the conversation, and it goes upstream as what was seen.
    status, lines, _ = await chat(client, second.url, {"message": "continue", "conversation_id": cid})
    assert status == 200, lines
    assert upstream.requests[-1].body["messages"] == [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "saved before death"},
        {"role": "user", "content": "continue"},
    ]


async def test_two_processes_share_conversations_and_the_claim(
    spawn: Spawn, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.on("endless", Reply(writes=sse_chunks(["holding"], finish_reason=None, done=False), hold_open=True))
    one = await spawn("one")
    two = await spawn("two")
    _, lines, _ = await chat(client, one.url, {"message": "started on one"})
    cid = meta_of(lines)["conversation_id"]
    status, lines, _ = await chat(client, two.url, {"message": "continued on two", "conversation_id": cid})
    assert status == 200
    assert upstream.requests[-1].body["messages"] == [
        {"role": "user", "content": "started on one"},
        {"role": "assistant", "content": "Hello from the fake upstream!"},
        {"role": "user", "content": "continued on two"},
    ]
    listed = (await client.get(f"{one.url}/conversations")).json()["data"]
    assert [(item["id"], item["message_count"]) for item in listed] == [(cid, 4)]

    async with client.stream(
        "POST", f"{one.url}/chat", json={"message": "long", "conversation_id": cid, "model": "endless"}
    ) as running:
        lines = running.aiter_lines()  # held: a dropped iterator closes the response
        assert "meta" in json.loads(await anext(lines))
        status, problem, _ = await chat(client, two.url, {"message": "from two", "conversation_id": cid})
        assert status == 409, problem
        assert problem[0]["code"] == "conflict"
        assert (await client.delete(f"{two.url}/conversations/{cid}")).status_code == 409


async def test_concurrent_chats_from_two_processes_get_exactly_one_stream(
    spawn: Spawn, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.on("slowish", Reply(writes=sse_chunks(["a", "b"]), delay=1.5))
    one = await spawn("one")
    two = await spawn("two")
    _, lines, _ = await chat(client, one.url, {"message": "first"})
    cid = meta_of(lines)["conversation_id"]
    body = {"message": "race", "conversation_id": cid, "model": "slowish"}
    results = await asyncio.gather(*(chat(client, service.url, body) for service in (one, two, one, two)))
    assert sorted(status for status, _, _ in results) == [200, 409, 409, 409]


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


def _litestar(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LITESTAR, "database", *args, "--no-prompt"],
        cwd=REPO_ROOT,
        env=clean_env(AGENT_DATABASE__URL=url, APP_ENV="production", **OPS_CREDENTIAL),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_migrations_upgrade_an_empty_database_and_downgrade_to_base(database_url: str) -> None:
    done = await asyncio.to_thread(_litestar, "upgrade", url=database_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {"conversations", "messages", "alembic_versions"} <= await _tables(database_url)
    done = await asyncio.to_thread(_litestar, "downgrade", "base", url=database_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert await _tables(database_url) <= {"alembic_versions"}


async def test_production_refuses_a_database_behind_the_schema_with_one_line(
    database_url: str, upstream: FakeUpstream, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    port = free_port()
    env = clean_env(
        APP_ENV="production",
        AGENT_PORT=str(port),
        AGENT_DATABASE__URL=database_url,
        AGENT_PROVIDERS__LOCAL__BASE_URL=upstream.base_url,
        **OPS_CREDENTIAL,
    )
    command = [sys.executable, "-m", "app"]
    started = time.monotonic()
    done = await asyncio.to_thread(
        subprocess.run, command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert time.monotonic() - started < 30
    assert "Traceback" not in output
    ours = [line for line in output.splitlines() if "agent-backend:" in line]
    assert len(ours) == 1, output
    assert "litestar database upgrade" in ours[0]
    assert await _tables(database_url) <= {"alembic_versions"}  # production never upgrades by itself

    migrated = await asyncio.to_thread(_litestar, "upgrade", url=database_url)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    service = await start_service_process(tmp_path / "production.log", env, argv=command, port=port)
    try:
        response = await client.post(
            f"{service.url}/chat",
            json={"message": "at the current revision"},
            headers={"Authorization": f"Bearer {OPS_KEY}"},
        )
        assert response.status_code == 200, response.text
        lines = [json.loads(line) for line in response.text.splitlines() if line]
        status = response.status_code
        assert status == 200 and "conversation_id" in meta_of(lines)
    finally:
        service.stop()


async def test_the_readme_commands_store_history_in_a_sqlite_file_in_the_working_directory(
    upstream: FakeUpstream, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    shutil.copy(REPO_ROOT / "settings.toml", tmp_path / "settings.toml")
    port = free_port()
    env = clean_env(AGENT_PORT=str(port), AGENT_PROVIDERS__LOCAL__BASE_URL=upstream.base_url)
    argv = [sys.executable, "-m", "app"]
    service = await start_service_process(tmp_path / "dev.log", env, argv=argv, port=port, cwd=tmp_path)
    try:
        status, lines, _ = await chat(client, service.url, {"message": "remember me"})
        assert status == 200
        listed = (await client.get(f"{service.url}/conversations")).json()["data"]
        assert [item["id"] for item in listed] == [meta_of(lines)["conversation_id"]]
    finally:
        service.stop()
    assert (tmp_path / "agent-backend.db").is_file()
