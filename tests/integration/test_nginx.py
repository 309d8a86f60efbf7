"""Two service processes behind nginx, with the repository's own config (``deploy/nginx/agent-backend.conf``).

nginx is Debian's package; the test starts it on loopback with a main config of its own that
includes the shipped file (ports rewritten). Without nginx the tests are skipped, except under
``CI=true``, where they fail (``.ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.fake_upstream import FakeUpstream, Reply, sse_chunks
from tests.service_process import REPO_ROOT, ServiceProcess, clean_env, free_port, start_service_process

SHIPPED = REPO_ROOT / "deploy" / "nginx" / "agent-backend.conf"


def require_nginx() -> str:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx:
        return nginx
    if os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}:
        pytest.fail("CI=true, but nginx is not installed (.ci/run installs it with apt-get)", pytrace=False)
    pytest.skip("needs nginx (apt-get install nginx)")


@dataclass
class Proxy:
    url: str
    services: list[ServiceProcess]


async def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited with {proc.returncode}: {_tail(log)}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError(f"nginx did not listen on {port}: {_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


@pytest.fixture
async def proxy(upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[Proxy]:
    nginx = require_nginx()
    env = clean_env(APP_ENV="testing", AGENT_LOG_LEVEL="info", AGENT_PROVIDERS__LOCAL__BASE_URL=upstream.base_url)
    services = [await start_service_process(tmp_path / f"service-{i}.log", env) for i in range(2)]
    port = free_port()
    site = SHIPPED.read_text()
    for placeholder, service in zip(("127.0.0.1:8001", "127.0.0.1:8002"), services, strict=True):
        assert placeholder in site
        site = site.replace(placeholder, f"127.0.0.1:{service.port}")
    assert "listen 8080;" in site
    site = site.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    (tmp_path / "agent-backend.conf").write_text(site)
    temp = tmp_path / "nginx-temp"
    temp.mkdir()
    user = "user root root;\n" if os.geteuid() == 0 else ""
    (tmp_path / "nginx.conf").write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log info;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"  access_log {tmp_path}/access.log;\n"
        + "".join(
            f"  {kind}_temp_path {temp}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"  include {tmp_path}/agent-backend.conf;\n"
        "}\n"
    )
    log = tmp_path / "nginx.out"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 (started once; the waits are async)
            [nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "error.log")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        await _wait_port(port, proc, tmp_path / "error.log")
        yield Proxy(f"http://127.0.0.1:{port}", services)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        for service in services:
            service.stop()


async def test_each_delta_arrives_through_nginx_before_the_upstream_has_finished(
    upstream: FakeUpstream, proxy: Proxy
) -> None:
    upstream.on("slow", Reply.sse(["one", " two", " three"], delay=0.4))
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream(
            "POST", f"{proxy.url}/chat", json={"message": "hi", "model": "slow"}, headers={"x-request-id": "via-nginx"}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["x-request-id"] == "via-nginx"
        lines: list[dict[str, Any]] = []
        async for line in response.aiter_lines():
            if not line:
                continue
            lines.append(json.loads(line))
            if lines[-1].get("delta") == "one":
                assert upstream.requests[-1].finished_at is None, "nginx held the first delta back"
    assert "".join(line.get("delta", "") for line in lines) == "one two three"
    assert lines[-1] == {"done": True, "finish_reason": "stop"}


async def test_a_client_leaving_nginx_closes_the_upstream_within_a_second(upstream: FakeUpstream, proxy: Proxy) -> None:
    upstream.on("endless", Reply(writes=sse_chunks(["a"], finish_reason=None, done=False), hold_open=True))
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("POST", f"{proxy.url}/chat", json={"message": "hi", "model": "endless"}) as r:
            async for line in r.aiter_lines():
                if '"delta"' in line:
                    break
        left = time.monotonic()
    record = upstream.requests[-1]
    await asyncio.wait_for(record.disconnected.wait(), 1.0)
    assert record.disconnected_at is not None
    assert record.disconnected_at - left < 1.0


async def test_a_websocket_chat_passes_through_nginx(upstream: FakeUpstream, proxy: Proxy) -> None:
    upstream.on("m", Reply.sse(["over", " the", " socket"], delay=0.05))
    async with connect(proxy.url.replace("http://", "ws://") + "/chat/ws", subprotocols=["agent-backend.v1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "agent-backend.v1"
        await ws.send(json.dumps({"type": "chat", "id": 1, "model": "m", "message": "hi"}))
        frames = []
        while not frames or "done" not in frames[-1]:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
    assert "".join(frame.get("delta", "") for frame in frames) == "over the socket"
    assert frames[-1] == {"done": True, "finish_reason": "stop", "id": 1}


async def test_both_processes_take_requests_through_nginx(upstream: FakeUpstream, proxy: Proxy) -> None:
    upstream.on("slow", Reply.sse(["a", "b"], delay=0.2))
    async with httpx.AsyncClient(timeout=10) as client:

        async def chat() -> int:
            response = await client.post(f"{proxy.url}/chat", json={"message": "x", "model": "slow"})
            return response.status_code

        assert await asyncio.gather(*(chat() for _ in range(6))) == [200] * 6
    served = [
        sum(1 for line in s.output().splitlines() if "request" in line and "/chat" in line) for s in proxy.services
    ]
    assert all(count > 0 for count in served), f"requests per process: {served}"
