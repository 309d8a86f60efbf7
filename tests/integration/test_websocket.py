"""``WS /chat/ws`` over real sockets: the app under uvicorn, the fake upstream, the ``websockets`` client."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from app.config import Settings
from app.sections import WebSocketSettings
from providers import OpenAIConfig
from tests.fake_upstream import FakeUpstream, Reply, bench_text, sse_chunks
from tests.integration.conftest import LiveService
from tests.service_process import REPO_ROOT, clean_env, start_service_process


def ws_url(service: LiveService | Any) -> str:
    return service.url.replace("http://", "ws://") + "/chat/ws"


async def until_terminal(ws: ClientConnection) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        frames.append(frame)
        if "done" in frame or "error" in frame:
            return frames


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(frame.get("delta", "") for frame in frames)


async def until(condition: Any, within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.01)


@pytest.fixture
async def socket_to(service: LiveService) -> AsyncIterator[ClientConnection]:
    async with connect(ws_url(service), subprotocols=["agent-backend.v1"]) as ws:  # type: ignore[list-item]
        yield ws


async def test_each_delta_arrives_before_the_upstream_has_finished(
    upstream: FakeUpstream, socket_to: ClientConnection
) -> None:
    upstream.on("slow", Reply.sse(["one", " two", " three"], delay=0.4))
    assert socket_to.subprotocol == "agent-backend.v1"
    await socket_to.send(json.dumps({"type": "chat", "id": 1, "model": "slow", "message": "hi"}))
    frames: list[dict[str, Any]] = []
    arrivals: list[float] = []
    while not frames or not ("done" in frames[-1] or "error" in frames[-1]):
        frames.append(json.loads(await asyncio.wait_for(socket_to.recv(), 5)))
        arrivals.append(time.monotonic())
        if frames[-1].get("delta") == "one":
            assert upstream.requests[-1].finished_at is None, "the first delta waited for the whole answer"
    assert text_of(frames) == "one two three"
    deltas = [t for t, f in zip(arrivals, frames, strict=True) if "delta" in f]
    assert deltas[1] - deltas[0] > 0.25, "deltas were held back and sent together"
    assert frames[-1] == {"done": True, "finish_reason": "stop", "id": 1}


async def test_cancel_ends_the_chat_and_closes_the_upstream_within_a_second(
    upstream: FakeUpstream, service: LiveService, socket_to: ClientConnection
) -> None:
    upstream.on("endless", Reply(writes=sse_chunks(["a", "b"], finish_reason=None, done=False), hold_open=True))
    await socket_to.send(json.dumps({"type": "chat", "id": "c", "model": "endless", "message": "hi"}))
    while "delta" not in json.loads(await asyncio.wait_for(socket_to.recv(), 5)):
        pass
    await socket_to.send('{"type": "cancel"}')
    cancelled_at = time.monotonic()
    frames = await until_terminal(socket_to)
    assert frames[-1] == {"done": True, "finish_reason": "cancelled", "id": "c"}
    record = upstream.requests[-1]
    await asyncio.wait_for(record.disconnected.wait(), 1.0)
    assert record.disconnected_at is not None
    assert record.disconnected_at - cancelled_at < 1.0
    await until(lambda: service.upstream_connections_in_use() == 0)
    # The socket goes on: the next chat is answered.
    await socket_to.send(json.dumps({"type": "chat", "id": "next", "message": "again"}))
    assert (await until_terminal(socket_to))[-1]["done"] is True


async def test_cancel_while_the_upstream_is_opening(upstream: FakeUpstream, socket_to: ClientConnection) -> None:
    upstream.on("thinking", Reply(writes=sse_chunks(["late"]), head_delay=30))
    await socket_to.send(json.dumps({"type": "chat", "id": 9, "model": "thinking", "message": "hi"}))
    await until(lambda: bool(upstream.requests))
    await socket_to.send('{"type": "cancel"}')
    cancelled_at = time.monotonic()
    assert await until_terminal(socket_to) == [{"done": True, "finish_reason": "cancelled", "id": 9}]
    record = upstream.requests[-1]
    await asyncio.wait_for(record.disconnected.wait(), 1.0)
    assert record.disconnected_at is not None
    assert record.disconnected_at - cancelled_at < 1.0


async def test_closing_the_socket_closes_the_upstream_within_a_second(
    upstream: FakeUpstream, service: LiveService
) -> None:
    upstream.on("endless", Reply(writes=sse_chunks(["a"], finish_reason=None, done=False), hold_open=True))
    async with connect(ws_url(service)) as ws:
        await ws.send(json.dumps({"type": "chat", "model": "endless", "message": "hi"}))
        while "delta" not in json.loads(await asyncio.wait_for(ws.recv(), 5)):
            pass
    closed_at = time.monotonic()
    record = upstream.requests[-1]
    await asyncio.wait_for(record.disconnected.wait(), 1.0)
    assert record.disconnected_at is not None
    assert record.disconnected_at - closed_at < 1.0
    await until(lambda: service.upstream_connections_in_use() == 0)


async def test_three_chats_in_sequence_on_one_socket(upstream: FakeUpstream, socket_to: ClientConnection) -> None:
    for number in range(3):
        upstream.on(f"m{number}", Reply.sse([f"answer {number}", " é🙂"]))
    for number in range(3):
        await socket_to.send(json.dumps({"type": "chat", "id": number, "model": f"m{number}", "message": "x"}))
        frames = await until_terminal(socket_to)
        assert frames[0]["meta"]["model"] == f"m{number}"
        assert text_of(frames) == f"answer {number} é🙂"
        assert frames[-1] == {"done": True, "finish_reason": "stop", "id": number}
        assert {frame["id"] for frame in frames} == {number}
    assert len(upstream.requests) == 3


async def test_a_chat_while_one_runs_is_busy_and_the_first_goes_on(
    upstream: FakeUpstream, socket_to: ClientConnection
) -> None:
    upstream.on("slow", Reply.sse(["first", " answer"], delay=0.3))
    await socket_to.send(json.dumps({"type": "chat", "id": "a", "model": "slow", "message": "one"}))
    await socket_to.send(json.dumps({"type": "chat", "id": "b", "message": "two"}))
    await socket_to.send(json.dumps({"type": "chat", "id": "c", "message": ""}))  # invalid beats busy
    frames = await until_terminal_of(socket_to, "a")
    busy = [f for f in frames if f.get("id") == "b"]
    invalid = [f for f in frames if f.get("id") == "c"]
    assert busy == [{"error": {"code": "busy", "message": busy[0]["error"]["message"], "retryable": True}, "id": "b"}]
    assert invalid[0]["error"]["code"] == "invalid_request"
    first = [f for f in frames if f.get("id") == "a"]
    assert text_of(first) == "first answer"
    assert first[-1] == {"done": True, "finish_reason": "stop", "id": "a"}
    assert len(upstream.requests) == 1


async def until_terminal_of(ws: ClientConnection, frame_id: str) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        frames.append(frame)
        if frame.get("id") == frame_id and ("done" in frame or "error" in frame):
            return frames


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        b'{"type": "chat", "message": "binary"}',
        "[]",
        "42",
        '{"type": "hello"}',
        '{"type": "chat", "message": "x", "max_tokens": 0}',
        '{"type": "chat", "message": "x", "messages": [{"role": "robot", "content": "?"}]}',
    ],
)
async def test_every_bad_frame_kind_is_invalid_request_and_the_socket_stays(
    upstream: FakeUpstream, socket_to: ClientConnection, frame: str | bytes
) -> None:
    await socket_to.send(frame)
    (error,) = await until_terminal(socket_to)
    assert error["error"]["code"] == "invalid_request"
    assert upstream.requests == []
    await socket_to.send(json.dumps({"type": "chat", "message": "fine"}))
    assert (await until_terminal(socket_to))[-1]["done"] is True


async def test_hundred_concurrent_sockets_get_exactly_their_answers(upstream: FakeUpstream) -> None:
    service = LiveService(
        Settings(
            providers={"local": OpenAIConfig(base_url=upstream.base_url)},
            websocket=WebSocketSettings(max_sockets_per_principal=100),  # one client address opens them all
        )
    )
    await service.start()

    def tokens(i: int) -> list[str]:
        return [f"s{i}-t{j} é🙂 " for j in range(20)]

    for i in range(100):
        upstream.on(f"m{i}", Reply.sse(tokens(i), delay=0.005, per_write=1 + i % 3, chunk_per_event=i % 2 == 0))

    async def one(i: int) -> tuple[int, list[dict[str, Any]]]:
        async with connect(ws_url(service)) as ws:
            await ws.send(json.dumps({"type": "chat", "id": i, "model": f"m{i}", "message": "x"}))
            return i, await until_terminal(ws)

    try:
        results = await asyncio.gather(*(one(i) for i in range(100)))
    finally:
        await service.stop()
    for i, frames in results:
        assert frames[0]["meta"]["model"] == f"m{i}"
        assert text_of(frames) == "".join(tokens(i))
        assert frames[-1] == {"done": True, "finish_reason": "stop", "id": i}
        assert [n for n, f in enumerate(frames) if "done" in f or "error" in f] == [len(frames) - 1]


async def test_too_many_sockets_for_one_principal_is_a_429_handshake(upstream: FakeUpstream) -> None:
    settings = Settings(
        providers={"local": OpenAIConfig(base_url=upstream.base_url)},
        websocket=WebSocketSettings(max_sockets_per_principal=2),
    )
    service = LiveService(settings)
    await service.start()
    try:
        async with connect(ws_url(service)), connect(ws_url(service)):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(ws_url(service)):
                    pass
            assert refused.value.response.status_code == 429
            assert refused.value.response.headers["retry-after"] == "1"
            assert json.loads(refused.value.response.body)["code"] == "rate_limited"
        async with connect(ws_url(service)) as again:
            await again.send(json.dumps({"type": "chat", "message": "x"}))
            assert (await until_terminal(again))[-1]["done"] is True
    finally:
        await service.stop()


async def test_an_idle_socket_is_closed_after_the_idle_timeout(upstream: FakeUpstream) -> None:
    upstream.on("slow", Reply.sse(["a", "b", "c"], delay=0.3))
    settings = Settings(
        providers={"local": OpenAIConfig(base_url=upstream.base_url)},
        websocket=WebSocketSettings(idle_timeout_seconds=0.5),
    )
    service = LiveService(settings)
    await service.start()
    try:
        async with connect(ws_url(service)) as ws:
            # A chat longer than the idle timeout is not idle; the clock starts when it ends.
            await ws.send(json.dumps({"type": "chat", "model": "slow", "message": "x"}))
            assert (await until_terminal(ws))[-1]["done"] is True
            ended = time.monotonic()
            await asyncio.wait_for(ws.wait_closed(), 3)
            assert 0.35 < time.monotonic() - ended < 2.0
            assert ws.close_code == 1000
    finally:
        await service.stop()


async def test_a_client_that_stops_reading_does_not_make_the_service_buffer_the_answer(tmp_path: Path) -> None:
    """The upstream streams a 150,000-token answer (~17 MB of SSE) as fast as it can; the client
    reads the meta line and then nothing for three seconds. The service's memory must not grow
    with the answer: the pump waits on the socket, the upstream read waits on the pump, and the
    LLM server's writes wait on TCP."""
    tokens = 150_000
    up_log = (tmp_path / "upstream.log").open("wb")
    upstream = subprocess.Popen(  # noqa: ASYNC220 (started once; the waits below are async)
        [sys.executable, "-m", "tests.fake_upstream", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=up_log,
    )
    try:
        assert upstream.stdout is not None
        ready = await asyncio.to_thread(upstream.stdout.readline)
        port = int(ready.split()[1])
        # Stateless: a stored answer keeps the text it streamed (to write it at the end), which
        # is memory for the answer, not the transport buffering; this test is about the latter.
        env = clean_env(
            APP_ENV="testing",
            AGENT_PROVIDERS__LOCAL__BASE_URL=f"http://127.0.0.1:{port}/v1",
            AGENT_DATABASE__ENABLED="false",
        )
        service = await start_service_process(tmp_path / "service.log", env)
        try:
            process = psutil.Process(service.proc.pid)
            async with httpx.AsyncClient() as warm:  # load what a first chat loads, then measure
                await warm.post(f"{service.url}/chat", json={"message": "warm-up"})
            idle_rss = process.memory_info().rss
            raw = socket.create_connection(("127.0.0.1", service.port))
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            async with connect(ws_url(service), sock=raw, max_queue=4, max_size=None) as ws:
                model = f"bench:tokens={tokens}:per_write=100:delay_ms=0:framing=event"
                await ws.send(json.dumps({"type": "chat", "model": model, "message": "x"}))
                assert "meta" in json.loads(await ws.recv())
                await asyncio.sleep(3)
                stalled_rss = process.memory_info().rss
                received: list[str] = []
                for _ in range(5000):  # reading again resumes the stream where it stopped
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    received.append(frame.get("delta", ""))
            growth_mb = (stalled_rss - idle_rss) / 2**20
            print(f"service RSS growth while the client did not read: {growth_mb:.1f} MB")
            # Buffered whole, 150,000 frames would be tens of MB of Python objects.
            assert growth_mb < 8, f"the service grew by {growth_mb:.1f} MB while its client did not read"
            assert "".join(received) == bench_text(tokens)[: len("".join(received))]
            assert len(received) == 5000
        finally:
            service.stop()
    finally:
        upstream.terminate()
        upstream.wait(10)
        if upstream.stdout is not None:
            upstream.stdout.close()
        up_log.close()
