"""Streaming over real sockets: incremental delivery, cancellation, concurrency, failures."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from app.config import Limits, Settings
from providers import OpenAIConfig
from tests.fake_upstream import FakeUpstream, Reply, sse_chunks
from tests.integration.conftest import NO_DATABASE, LiveService, ServiceFactory, free_port


async def read_lines(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) async for line in response.aiter_lines() if line]


def text_of(lines: list[dict[str, Any]]) -> str:
    return "".join(line["delta"] for line in lines if "delta" in line)


def terminal(lines: list[dict[str, Any]]) -> dict[str, Any]:
    ends = [i for i, line in enumerate(lines) if "done" in line or "error" in line]
    assert ends == [len(lines) - 1], f"exactly one terminal line, last: {lines}"
    return lines[-1]


async def test_each_delta_arrives_before_the_upstream_has_finished(
    upstream: FakeUpstream, service: LiveService, client: httpx.AsyncClient
) -> None:
    upstream.on("slow", Reply.sse(["one", " two", " three"], delay=0.4))
    arrivals: list[tuple[float, dict[str, Any]]] = []
    start = time.monotonic()
    async with client.stream("POST", f"{service.url}/chat", json={"message": "hi", "model": "slow"}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line:
                arrivals.append((time.monotonic() - start, json.loads(line)))
                if "delta" in arrivals[-1][1] and arrivals[-1][1]["delta"] == "one":
                    # The upstream is still sleeping before its next write.
                    assert upstream.requests[-1].finished_at is None
    deltas = [(t, line["delta"]) for t, line in arrivals if "delta" in line]
    assert [d for _, d in deltas] == ["one", " two", " three"]
    # Writes: role chunk at once, then one token every 0.4 s.
    assert deltas[0][0] < 0.65, "the first delta waited for later ones"
    assert deltas[1][0] - deltas[0][0] > 0.25, "deltas were batched together"
    assert arrivals[0][1]["meta"]["model"] == "slow"
    assert terminal([line for _, line in arrivals])["finish_reason"] == "stop"


async def test_client_disconnect_closes_upstream_within_a_second(
    upstream: FakeUpstream, service: LiveService, client: httpx.AsyncClient
) -> None:
    upstream.on("endless", Reply(writes=sse_chunks(["a", "b"], finish_reason=None, done=False), hold_open=True))
    async with client.stream("POST", f"{service.url}/chat", json={"message": "hi", "model": "endless"}) as response:
        async for line in response.aiter_lines():
            if '"delta"' in line:
                break
        left_at = time.monotonic()
    record = upstream.requests[-1]
    await asyncio.wait_for(record.disconnected.wait(), timeout=1.0)
    assert record.disconnected_at is not None
    assert record.disconnected_at - left_at < 1.0
    await _until(lambda: service.upstream_connections_in_use() == 0)
    await _until(lambda: upstream.open_connections == 0)


async def test_disconnect_while_waiting_for_upstream_headers_closes_it(
    upstream: FakeUpstream, service: LiveService, client: httpx.AsyncClient
) -> None:
    upstream.on("thinking", Reply(writes=sse_chunks(["late"]), head_delay=30))
    request = asyncio.create_task(client.post(f"{service.url}/chat", json={"message": "hi", "model": "thinking"}))
    await _until(lambda: bool(upstream.requests))
    request.cancel()
    left_at = time.monotonic()
    record = upstream.requests[-1]
    await asyncio.wait_for(record.disconnected.wait(), timeout=1.5)
    assert record.disconnected_at is not None
    assert record.disconnected_at - left_at < 1.0
    await _until(lambda: service.upstream_connections_in_use() == 0)


async def test_no_task_left_after_many_cancelled_streams(
    upstream: FakeUpstream, service: LiveService, client: httpx.AsyncClient
) -> None:
    upstream.on("endless", Reply(writes=sse_chunks(["a"], finish_reason=None, done=False), hold_open=True))
    baseline = len(asyncio.all_tasks())

    async def abandon() -> None:
        async with client.stream("POST", f"{service.url}/chat", json={"message": "x", "model": "endless"}) as r:
            async for line in r.aiter_lines():
                if '"delta"' in line:
                    return

    await asyncio.gather(*(abandon() for _ in range(50)))
    await _until(lambda: all(r.disconnected.is_set() for r in upstream.requests))
    await _until(lambda: service.upstream_connections_in_use() == 0)
    await _until(lambda: len(asyncio.all_tasks()) <= baseline)


async def test_hundred_concurrent_streams_complete_exactly(
    upstream: FakeUpstream, service: LiveService, client: httpx.AsyncClient
) -> None:
    def tokens(i: int) -> list[str]:
        return [f"s{i}-t{j} é🙂 " for j in range(30)]

    for i in range(100):
        upstream.on(f"m{i}", Reply.sse(tokens(i), delay=0.005, per_write=1 + i % 3))

    async def one(i: int) -> tuple[int, list[dict[str, Any]]]:
        async with client.stream("POST", f"{service.url}/chat", json={"message": "x", "model": f"m{i}"}) as r:
            assert r.status_code == 200
            return i, await read_lines(r)

    results = await asyncio.gather(*(one(i) for i in range(100)))
    for i, lines in results:
        assert lines[0]["meta"]["model"] == f"m{i}"
        assert text_of(lines) == "".join(tokens(i))
        assert terminal(lines) == {"done": True, "finish_reason": "stop"}


async def test_unreachable_upstream_is_502_problem(start_service: ServiceFactory, client: httpx.AsyncClient) -> None:
    service: LiveService = await start_service(base_url=f"http://127.0.0.1:{free_port()}/v1")
    response = await client.post(f"{service.url}/chat", json={"message": "x"})
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "upstream_unavailable"
    assert "could not connect to provider 'local'" in problem["detail"]
    assert "is the LLM server running?" in problem["detail"]


async def test_upstream_silent_before_headers_is_504(
    upstream: FakeUpstream, start_service: ServiceFactory, client: httpx.AsyncClient
) -> None:
    service: LiveService = await start_service(timeout_seconds=0.3)
    upstream.on("mute", Reply(writes=sse_chunks(["x"]), head_delay=5))
    response = await client.post(f"{service.url}/chat", json={"message": "x", "model": "mute"})
    assert response.status_code == 504
    assert response.json()["code"] == "upstream_timeout"


async def test_all_upstream_connections_busy_is_503_after_connect_timeout(
    upstream: FakeUpstream, start_service: ServiceFactory, client: httpx.AsyncClient
) -> None:
    service: LiveService = await start_service(limits=Limits(max_upstream_connections=1), connect_timeout_seconds=0.3)
    upstream.on("endless", Reply(writes=sse_chunks(["a"], finish_reason=None, done=False), hold_open=True))
    async with client.stream("POST", f"{service.url}/chat", json={"message": "x", "model": "endless"}) as held:
        assert held.status_code == 200
        started = time.monotonic()
        response = await client.post(f"{service.url}/chat", json={"message": "x"})
        waited = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["code"] == "upstream_unavailable"
    assert response.headers["retry-after"] == "1"
    assert 0.2 < waited < 3


async def test_upstream_silent_mid_stream_ends_with_timeout_line(
    upstream: FakeUpstream, start_service: ServiceFactory, client: httpx.AsyncClient
) -> None:
    service: LiveService = await start_service(timeout_seconds=0.3)
    upstream.on("stall", Reply(writes=sse_chunks(["partial"], finish_reason=None, done=False), hold_open=True))
    async with client.stream("POST", f"{service.url}/chat", json={"message": "x", "model": "stall"}) as r:
        lines = await read_lines(r)
    assert text_of(lines) == "partial"
    assert terminal(lines)["error"] == {
        "code": "upstream_timeout",
        "message": terminal(lines)["error"]["message"],
        "retryable": True,
    }


async def test_empty_200_body_ends_with_stream_interrupted(
    upstream: FakeUpstream, service: LiveService, client: httpx.AsyncClient
) -> None:
    upstream.on("empty", Reply(writes=[]))
    async with client.stream("POST", f"{service.url}/chat", json={"message": "x", "model": "empty"}) as r:
        assert r.status_code == 200
        lines = await read_lines(r)
    assert terminal(lines)["error"]["code"] == "stream_interrupted"
    assert len(lines) == 2


async def test_connection_dropped_mid_stream_keeps_partial_answer(
    upstream: FakeUpstream, service: LiveService, client: httpx.AsyncClient
) -> None:
    upstream.on(
        "drop",
        Reply(writes=sse_chunks(["kept", " text"], finish_reason=None, done=False), close_abruptly=True),
    )
    async with client.stream("POST", f"{service.url}/chat", json={"message": "x", "model": "drop"}) as r:
        lines = await read_lines(r)
    assert text_of(lines) == "kept text"
    assert terminal(lines)["error"]["code"] == "stream_interrupted"


async def test_upstream_error_object_under_200(
    upstream: FakeUpstream, service: LiveService, client: httpx.AsyncClient
) -> None:
    error = b'data: {"error": {"message": "the request exceeds the available context size", "code": 400}}\n\n'
    upstream.on("ctx", Reply(writes=[*sse_chunks(["so far"], finish_reason=None, done=False), error]))
    async with client.stream("POST", f"{service.url}/chat", json={"message": "x", "model": "ctx"}) as r:
        lines = await read_lines(r)
    assert text_of(lines) == "so far"
    failure = terminal(lines)["error"]
    assert failure["code"] == "upstream_rejected"
    assert "exceeds the available context size" in failure["message"]


async def test_upstream_429_is_429_with_retry_after(
    upstream: FakeUpstream, service: LiveService, client: httpx.AsyncClient
) -> None:
    upstream.on("busy", Reply.json({"error": {"message": "queue full"}}, 429, headers={"retry-after": "5"}))
    response = await client.post(f"{service.url}/chat", json={"message": "x", "model": "busy"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "5"
    assert response.json()["code"] == "rate_limited"


async def test_upstream_request_body_and_keepalive(
    upstream: FakeUpstream, service: LiveService, client: httpx.AsyncClient
) -> None:
    for _ in range(3):
        async with client.stream("POST", f"{service.url}/chat", json={"message": "hi", "max_tokens": 9}) as r:
            await read_lines(r)
    assert upstream.requests[-1].body == {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 9,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert "authorization" not in upstream.requests[-1].headers
    assert upstream.connections_accepted == 1, "the shared client reuses its upstream connection"


async def _until(condition: Any, within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.01)


async def test_client_writes_for_one_upstream_read_of_many_http_chunks(
    upstream: FakeUpstream, service: LiveService, client: httpx.AsyncClient
) -> None:
    # One upstream socket write carrying the whole answer, each SSE event its own HTTP chunk, as
    # llama.cpp's server and vLLM frame them: role chunk, 20 tokens, finish chunk, [DONE].
    tokens = [f"t{i} " for i in range(20)]
    upstream.on("burst", Reply.sse(tokens, per_write=100, chunk_per_event=True))
    async with client.stream("POST", f"{service.url}/chat", json={"message": "x", "model": "burst"}) as r:
        # h11 hands over one piece per HTTP chunk, and the service writes one chunk per send.
        pieces = [piece async for piece in r.aiter_raw()]
    lines = [json.loads(line) for line in b"".join(pieces).decode().splitlines()]
    assert text_of(lines) == "".join(tokens)
    assert terminal(lines)["finish_reason"] == "stop"
    # The meta line, then ONE write for the one upstream read: its 23 HTTP chunks become one
    # batch (20 deltas and the done line). With httpx's own transport it was 1 + 20 + 1 writes.
    assert len(pieces) == 1 + 1


async def test_second_configured_provider_is_reached_over_its_own_socket(client: httpx.AsyncClient) -> None:
    async with FakeUpstream() as first, FakeUpstream() as second:
        second.on("qwen/qwen3-8b", Reply.sse(["from", " second"]))
        settings = Settings(
            providers={
                "local": OpenAIConfig(base_url=first.base_url, model="first-model"),
                "gpu": OpenAIConfig(base_url=second.base_url, model="second-model", api_key="sk-gpu"),
            },
            database=NO_DATABASE,
        )
        service = LiveService(settings)
        await service.start()
        try:
            async with client.stream(
                "POST", f"{service.url}/chat", json={"message": "x", "model": "GPU/qwen/qwen3-8b"}
            ) as r:
                lines = await read_lines(r)
            async with client.stream("POST", f"{service.url}/chat", json={"message": "y", "model": "gpu/"}) as r:
                refused = await r.aread()
        finally:
            await service.stop()
    assert lines[0] == {"meta": {"model": "qwen/qwen3-8b", "role": "assistant", "provider": "gpu"}}
    assert text_of(lines) == "from second"
    assert first.requests == []
    (request,) = second.requests
    assert request.body["model"] == "qwen/qwen3-8b"
    assert request.headers["authorization"] == "Bearer sk-gpu"
    assert json.loads(refused)["code"] == "invalid_request"
