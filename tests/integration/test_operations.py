"""Operations with real processes (CONTRACT §10): log lines, SIGTERM with streams in flight, several workers."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_upstream import FakeUpstream, Reply, sse_chunks
from tests.service_process import ServiceProcess, clean_env, free_port, start_service_process

GRACE = 1.5
SECRET_PROMPT = "my secret prompt about the merger"


def service_env(upstream: FakeUpstream, **extra: str) -> dict[str, str]:
    return clean_env(
        APP_ENV="testing",
        AGENT_LOG_LEVEL="info",
        AGENT_PROVIDERS__LOCAL__BASE_URL=upstream.base_url,
        AGENT_SHUTDOWN_GRACE_SECONDS=str(GRACE),
        **extra,
    )


def json_lines(output: str) -> list[dict[str, Any]]:
    lines = []
    for raw in output.splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


async def read_ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) async for line in response.aiter_lines() if line]


async def start(tmp_path: Path, env: dict[str, str], workers: int = 1) -> ServiceProcess:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "app:create_app", "--factory", "--port", str(port)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    return await start_service_process(tmp_path / "service.log", env, argv=argv, port=port)


async def test_one_structured_line_per_request_and_per_stream_end(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.on("m", Reply.sse(["one", " two"]))
    service = await start(tmp_path, service_env(upstream, AGENT_LOGGING__FORMAT="json"))
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(
                f"{service.url}/chat", json={"message": SECRET_PROMPT, "model": "m"}, headers={"x-request-id": "r-1"}
            )
            assert response.status_code == 200
            assert (await client.post(f"{service.url}/chat", json={"message": ""})).status_code == 400
    finally:
        service.stop()
    lines = json_lines(service.output())
    requests = [line for line in lines if line.get("message") == "request"]
    streams = [line for line in lines if line.get("message") == "stream end"]
    chat = next(line for line in requests if line["request_id"] == "r-1")
    assert {k: chat[k] for k in ("method", "route", "status", "principal")} == {
        "method": "POST",
        "route": "/chat",
        "status": 200,
        "principal": "anonymous",
    }
    assert chat["duration_ms"] >= 0
    assert any(line["status"] == 400 and line["route"] == "/chat" for line in requests)
    (stream,) = streams
    assert stream["request_id"] == "r-1"
    assert {k: stream[k] for k in ("route", "principal", "provider", "model", "outcome", "deltas")} == {
        "route": "/chat",
        "principal": "anonymous",
        "provider": "local",
        "model": "m",
        "outcome": "complete",
        "deltas": 2,
    }
    assert stream["ttfd_ms"] > 0
    assert stream["duration_ms"] >= stream["ttfd_ms"]
    # Every line is JSON (uvicorn's own included), and no prompt or answer text by default.
    assert all(raw.startswith("{") for raw in service.output().splitlines() if raw.strip())
    assert SECRET_PROMPT not in service.output()
    assert "one two" not in service.output()


async def test_log_prompts_puts_the_prompt_and_answer_in_the_stream_line(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.on("m", Reply.sse(["one", " two"]))
    env = service_env(upstream, AGENT_LOGGING__FORMAT="json", AGENT_LOGGING__LOG_PROMPTS="true")
    service = await start(tmp_path, env)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            await client.post(f"{service.url}/chat", json={"message": SECRET_PROMPT, "model": "m"})
    finally:
        service.stop()
    (stream,) = [line for line in json_lines(service.output()) if line.get("message") == "stream end"]
    assert stream["prompt"] == [SECRET_PROMPT]
    assert stream["answer"] == "one two"


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_lets_streams_finish_for_the_grace_period_then_ends_them(
    upstream: FakeUpstream, tmp_path: Path, workers: int
) -> None:
    upstream.on("short", Reply.sse(["a", "b", "c"], delay=0.1))  # six writes, 0.5 s: ends within the grace period
    upstream.on("endless", Reply(writes=sse_chunks(["x"], finish_reason=None, done=False), hold_open=True))
    service = await start(tmp_path, service_env(upstream), workers=workers)
    try:
        async with httpx.AsyncClient(timeout=15) as client:

            async def chat(model: str) -> list[dict[str, Any]]:
                async with client.stream("POST", f"{service.url}/chat", json={"message": "x", "model": model}) as r:
                    assert r.status_code == 200
                    return await read_ndjson(r)

            tasks = [asyncio.create_task(chat("short")), asyncio.create_task(chat("endless"))]
            await _until(lambda: len(upstream.requests) == 2 and all(r.writes_done for r in upstream.requests))
            service.signal(signal.SIGTERM)
            signalled = time.monotonic()
            short, endless = await asyncio.wait_for(asyncio.gather(*tasks), GRACE + 5)
            ended = time.monotonic() - signalled
            status = await service.wait(GRACE + 5)
        exited = time.monotonic() - signalled
    finally:
        service.stop()
    assert short[-1] == {"done": True, "finish_reason": "stop"}, "a stream that ends within the grace period ends"
    assert endless[-1]["error"]["code"] == "server_shutdown"
    assert endless[-1]["error"]["retryable"] is True
    assert [line["delta"] for line in endless if "delta" in line] == ["x"]
    assert GRACE - 0.3 < ended < GRACE + 2, f"the open stream was ended after {ended:.2f} s"
    assert exited < GRACE + 5
    assert status in (0, -signal.SIGTERM), service.output()[-2000:]
    await _until(lambda: all(r.disconnected_at is not None for r in upstream.requests if r.model == "endless"))


async def test_new_connections_are_refused_once_shutdown_begins(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.on("endless", Reply(writes=sse_chunks(["x"], finish_reason=None, done=False), hold_open=True))
    service = await start(tmp_path, service_env(upstream))
    try:
        async with (
            httpx.AsyncClient(timeout=15) as client,
            client.stream("POST", f"{service.url}/chat", json={"message": "x", "model": "endless"}) as r,
        ):
            await _until(lambda: bool(upstream.requests))
            service.signal(signal.SIGTERM)
            await asyncio.sleep(0.5)  # uvicorn closes its listening socket within its 0.1 s tick
            async with httpx.AsyncClient(timeout=2) as fresh:
                with pytest.raises(httpx.ConnectError):
                    await fresh.get(f"{service.url}/health")
            lines = await read_ndjson(r)
        assert lines[-1]["error"]["code"] == "server_shutdown"
        assert await service.wait(GRACE + 5) in (0, -signal.SIGTERM)
    finally:
        service.stop()


async def test_two_workers_both_serve_and_metrics_add_up(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.on("m", Reply.sse(["hello", " there"], delay=0.05))
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = service_env(upstream, AGENT_LOGGING__FORMAT="json", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    service = await start(tmp_path, env, workers=2)

    def started() -> int:
        return sum(1 for line in json_lines(service.output()) if line.get("message") == "Application startup complete.")

    def serving_pids() -> set[int]:
        return {line["pid"] for line in json_lines(service.output()) if line.get("message") == "stream end"}

    try:
        await _until(lambda: started() == 2, within=20)
        limits = httpx.Limits(max_keepalive_connections=0)  # a new connection each time: either worker may take it
        async with httpx.AsyncClient(timeout=15, limits=limits) as client:

            async def chat() -> list[dict[str, Any]]:
                async with client.stream("POST", f"{service.url}/chat", json={"message": "x", "model": "m"}) as r:
                    return await read_ndjson(r)

            results: list[list[dict[str, Any]]] = []
            for _ in range(5):  # the kernel picks the worker of each connection; a round may favour one
                results += await asyncio.gather(*(chat() for _ in range(20)))
                if len(serving_pids()) == 2:
                    break
            metrics = (await client.get(f"{service.url}/metrics")).text
    finally:
        service.stop()
    assert all("".join(line.get("delta", "") for line in lines) == "hello there" for lines in results)
    assert len(serving_pids()) == 2, f"all {len(results)} streams were served by {serving_pids()}"
    total = sum(
        float(line.rpartition(" ")[2])
        for line in metrics.splitlines()
        if line.startswith("agent_backend_streams_total{") and 'outcome="complete"' in line
    )
    assert total == len(results), (
        f"/metrics (one worker answered) did not add up both workers' series:\n{metrics[:2000]}"
    )


async def _until(condition: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.02)
