"""The HTTP/1.1 transport over real loopback sockets: framing, timeouts, errors, pool and keep-alive.

Each test drives an ``httpx.AsyncClient(transport=HTTP11Transport(...))`` the way the service
does (``build_request``, ``send(stream=True)``, ``aiter_raw``, ``aclose``) against either the
:class:`FakeUpstream` or, for what that cannot produce (exact chunk framing, a stale keep-alive
connection, a full accept queue), a raw ``asyncio.start_server`` written here. Every test runs
on asyncio's loop and on uvloop (``conftest.py``).

The sections down to and including "the pool" are the cases the aiohttp transport this one replaced was held
to, with the same assertions; the sections after them are what this design adds (one item per
socket read whatever the framing, backpressure, the one-timer read timeout, keep-alive edge
cases, TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import select
import shutil
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from providers.http11_transport import HTTP11Transport
from tests.fake_upstream import FakeUpstream, Reply, sse_chunks

SECRET = "sk-transport-secret-0123456789"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
ClientFactory = Callable[..., httpx.AsyncClient]


# --------------------------------------------------------------------------- helpers


class RawServer:
    """A loopback HTTP server whose every connection runs ``handler(reader, writer)``."""

    def __init__(self, handler: Handler, *, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/v1/chat/completions"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request (head and content-length body), as the bytes that came in."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + (await reader.readexactly(length) if length else b"")


def frame(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"


def sent_secret(exc: BaseException) -> bool:
    """Whether the secret header value shows in the exception or anything it was raised from."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if SECRET in str(current) or SECRET in repr(current):
            return True
        current = current.__cause__ or current.__context__
    return False


@pytest.fixture
async def up() -> AsyncIterator[FakeUpstream]:
    """A running fake upstream, stopped after the test's clients are closed (see ``make_client``)."""
    async with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
async def make_client(up: FakeUpstream) -> AsyncIterator[ClientFactory]:
    """Clients as the service builds them; each is closed (transport and all) after the test.

    Closed before ``up`` stops: ``FakeUpstream.stop()`` can otherwise wait for a kept-alive
    connection to close by itself (a handler cancelled inside its write-watcher cleanup
    swallows the cancellation and goes on to wait for the next request), which uvloop's
    timing makes happen.
    """
    clients: list[httpx.AsyncClient] = []

    def make(
        *, max_connections: int = 4, max_idle_connections: int = 4, keepalive_expiry: float = 30.0
    ) -> httpx.AsyncClient:
        transport = HTTP11Transport(
            max_connections=max_connections,
            max_idle_connections=max_idle_connections,
            keepalive_expiry=keepalive_expiry,
        )
        client = httpx.AsyncClient(transport=transport, headers={"authorization": f"Bearer {SECRET}"})
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def timeout(read: float = 2.0, *, connect: float = 1.0, pool: float = 1.0) -> httpx.Timeout:
    return httpx.Timeout(read, connect=connect, pool=pool)


async def open_stream(
    client: httpx.AsyncClient, url: str, *, model: str = "fake", t: httpx.Timeout | None = None
) -> httpx.Response:
    request = client.build_request(
        "POST",
        url,
        content=b'{"model":"%s","stream":true}' % model.encode(),
        headers={"content-type": "application/json", "accept": "text/event-stream"},
        timeout=t or timeout(),
    )
    return await client.send(request, stream=True)


async def read_all(response: httpx.Response) -> list[bytes]:
    try:
        return [chunk async for chunk in response.aiter_raw()]
    finally:
        await response.aclose()


async def collect(response: httpx.Response, items: list[bytes], *, within: float = 2.0) -> None:
    """Read the raw body into ``items`` until it ends or fails; a hang fails the test instead."""
    async with asyncio.timeout(within):
        async for chunk in response.aiter_raw():
            items.append(chunk)


def chat_url(up: FakeUpstream) -> str:
    return up.base_url + "/chat/completions"


async def until(condition: Callable[[], bool], seconds: float = 1.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


# --------------------------------------------------------------------------- the body


async def test_many_http_chunks_in_one_socket_write_arrive_as_one_item(make_client: ClientFactory) -> None:
    events = [b'data: {"i":%d,"text":"tok"}\n\n' % i for i in range(50)]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED_HEAD)
        await writer.drain()
        await asyncio.sleep(0.05)  # the client is waiting for the body by now
        writer.write(b"".join(frame(event) for event in events))  # 50 HTTP chunks, one write
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(LAST_CHUNK)
        await writer.drain()

    async with RawServer(handler) as server:
        items = await read_all(await open_stream(make_client(), server.url))
    assert items == [b"".join(events)]


async def test_bytes_are_exact_across_chunks_even_inside_a_utf8_character(make_client: ClientFactory) -> None:
    text = 'data: {"content":"café € 🎉"}\n\n'.encode()
    cut_e, cut_euro, cut_party = text.index(b"\xc3") + 1, text.index(b"\xe2") + 2, text.index(b"\xf0") + 3
    parts = [text[:cut_e], text[cut_e:cut_euro], text[cut_euro:cut_party], text[cut_party:]]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED_HEAD)
        for part in parts:  # one write per chunk, each after the client has read the last
            writer.write(frame(part))
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(frame(text) + frame(text) + LAST_CHUNK)  # and the same bytes within one write
        await writer.drain()

    async with RawServer(handler) as server:
        items = await read_all(await open_stream(make_client(), server.url))
    assert b"".join(items) == text * 3
    assert (text * 3).decode() == b"".join(items).decode()
    assert len(items) >= 2  # not read in one go: the split characters really crossed item boundaries


async def test_a_fake_upstream_answer_arrives_whole_and_the_connection_is_reused(
    up: FakeUpstream, make_client: ClientFactory
) -> None:
    writes = sse_chunks([f"tok{i} " for i in range(30)], per_write=7)
    up.default = Reply(writes=writes)
    client = make_client()
    for _ in range(3):
        response = await open_stream(client, chat_url(up))
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.http_version == "HTTP/1.1"
        assert response.reason_phrase == "OK"
        assert b"".join(await read_all(response)) == b"".join(writes)
    assert up.connections_accepted == 1
    assert len(up.requests) == 3


async def test_content_encoding_is_left_to_httpx(make_client: ClientFactory) -> None:
    plain = b'{"answer":"' + b"x" * 2000 + b'"}'
    packed = gzip.compress(plain)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(packed))
            writer.write(packed)
            await writer.drain()

    async with RawServer(handler) as server:
        client = make_client()
        assert b"".join(await read_all(await open_stream(client, server.url))) == packed
        response = await open_stream(client, server.url)
        assert await response.aread() == plain
        await response.aclose()


async def test_the_request_goes_out_exactly_as_httpx_would_send_it(make_client: ClientFactory) -> None:
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            heads.append(await read_request(reader))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async def body() -> AsyncIterator[bytes]:
        yield b'{"streamed":'
        yield b"true}"

    async with RawServer(handler) as server:
        ours = make_client()
        async with httpx.AsyncClient(headers={"authorization": f"Bearer {SECRET}"}) as default:
            for client in (default, ours):
                await client.post(server.url, content=b'{"a":1}', headers={"content-type": "application/json"})
                await client.post(server.url)
                await client.get(server.url + "/a%2Fb", params={"q": "a b/ü"}, headers={"x-twice": "1"})
        assert heads[:3] == heads[3:6]
        assert all(b"\r\nUser-Agent: python-httpx/" in head for head in heads[3:6])  # httpx's, nothing added
        # A streamed body is read first and sent with a length (no chunked upload).
        await ours.post(server.url, content=body())
        assert heads[-1].endswith(b'\r\nContent-Length: 17\r\n\r\n{"streamed":true}')
        assert b"transfer-encoding" not in heads[-1].lower()


# --------------------------------------------------------------------------- connecting


async def test_a_refused_connection_is_a_connect_error_and_frees_its_slot(make_client: ClientFactory) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the socket is closed
    client = make_client(max_connections=1)
    for _ in range(3):  # a leaked slot would make the second attempt a PoolTimeout
        with pytest.raises(httpx.ConnectError) as info:
            await open_stream(client, f"http://127.0.0.1:{port}/v1/chat/completions", t=timeout(pool=0.1))
        assert not isinstance(info.value.__cause__, socket.gaierror)
        assert "name or service not known" not in str(info.value).lower()
        assert not sent_secret(info.value)


async def test_an_unresolvable_host_is_a_connect_error_caused_by_gaierror(make_client: ClientFactory) -> None:
    host = "nonexistent.invalid"
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.getaddrinfo(host, 80), 2.0)
    except socket.gaierror:
        pass
    except TimeoutError:
        pytest.skip("name resolution here does not fail fast (no offline answer for .invalid)")
    else:
        pytest.skip("the resolver here answers for .invalid")
    with pytest.raises(httpx.ConnectError) as info:
        await open_stream(make_client(), f"http://{host}/v1/chat/completions", t=timeout(connect=2.0))
    assert isinstance(info.value.__cause__, socket.gaierror)
    assert host in str(info.value)
    assert not sent_secret(info.value)


@contextlib.contextmanager
def full_accept_queue() -> Iterator[int]:
    """A loopback port whose accept queue is full, so that a new connect hangs (SYNs dropped)."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(8):
            sock = socket.socket()
            sock.setblocking(False)
            fillers.append(sock)
            sock.connect_ex(("127.0.0.1", port))
            _, writable, _ = select.select([], [sock], [], 0.1)
            if not writable:
                break  # this one hangs: the queue is full
        else:
            pytest.skip("loopback connects complete even with a full accept queue here")
        yield port
    finally:
        for sock in fillers:
            sock.close()
        listener.close()


async def test_a_connect_that_takes_too_long_is_a_connect_timeout(make_client: ClientFactory) -> None:
    with full_accept_queue() as port:
        started = time.monotonic()
        with pytest.raises(httpx.ConnectTimeout) as info:
            await open_stream(make_client(), f"http://127.0.0.1:{port}/v1/chat/completions", t=timeout(connect=0.3))
        elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 1.0
    assert not sent_secret(info.value)


async def test_no_free_slot_within_the_pool_timeout_is_a_pool_timeout(
    up: FakeUpstream, make_client: ClientFactory
) -> None:
    up.on("held", Reply(writes=sse_chunks(["a"]), hold_open=True))
    client = make_client(max_connections=1)
    holder = await open_stream(client, chat_url(up), model="held")
    started = time.monotonic()
    with pytest.raises(httpx.PoolTimeout):
        await open_stream(client, chat_url(up), t=timeout(pool=0.2))
    assert 0.18 <= time.monotonic() - started < 0.6
    await holder.aclose()
    # The slot is back, and a waiter gets it as soon as the holder closes.
    assert b"".join(await read_all(await open_stream(client, chat_url(up), t=timeout(pool=0.2))))
    holder = await open_stream(client, chat_url(up), model="held")
    waiter = asyncio.ensure_future(open_stream(client, chat_url(up), t=timeout(pool=1.0)))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await holder.aclose()
    assert b"".join(await read_all(await asyncio.wait_for(waiter, 1.0)))


# --------------------------------------------------------------------------- reading


async def test_no_response_head_within_the_read_timeout_is_a_read_timeout(
    up: FakeUpstream, make_client: ClientFactory
) -> None:
    up.default = Reply(writes=sse_chunks(["a"]), head_delay=5.0)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout) as info:
        await open_stream(make_client(), chat_url(up), t=timeout(0.2))
    assert 0.18 <= time.monotonic() - started < 0.8
    assert not sent_secret(info.value)
    assert await until(lambda: up.requests[0].disconnected_at is not None)


async def test_silence_between_chunks_is_a_read_timeout(up: FakeUpstream, make_client: ClientFactory) -> None:
    up.default = Reply(writes=sse_chunks(["a", "b"]), delay=5.0)
    response = await open_stream(make_client(), chat_url(up), t=timeout(0.2))
    items: list[bytes] = []
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        await collect(response, items)
    assert 0.18 <= time.monotonic() - started < 0.8
    assert items == [sse_chunks(["a", "b"])[0]]
    await response.aclose()
    assert await until(lambda: up.requests[0].disconnected_at is not None)


async def test_a_kept_alive_connection_closed_before_the_response_is_a_remote_protocol_error(
    make_client: ClientFactory,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")  # keep-alive, it says
        await writer.drain()
        await read_request(reader)  # ... and then closes without answering the next request

    async with RawServer(handler) as server:
        client = make_client()
        assert b"".join(await read_all(await open_stream(client, server.url))) == b"ok"
        with pytest.raises(httpx.RemoteProtocolError) as info:
            await open_stream(client, server.url)
        assert server.connections == 1  # it was the kept-alive connection
        assert not sent_secret(info.value)
        # The service retries once; that goes out on a new connection and succeeds.
        assert b"".join(await read_all(await open_stream(client, server.url))) == b"ok"
        assert server.connections == 2


async def test_a_reset_before_the_response_is_an_error_the_service_retries(make_client: ClientFactory) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async with RawServer(handler) as server:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            await open_stream(make_client(), server.url)


@pytest.mark.parametrize("slow", [False, True], ids=["reading", "busy-reader"])
@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
async def test_a_body_cut_short_is_a_transport_error_after_the_bytes_before_it(
    up: FakeUpstream, make_client: ClientFactory, reset: bool, slow: bool
) -> None:
    writes = sse_chunks(["a", "b", "c"])
    up.default = Reply(writes=writes, close_abruptly=True, reset=reset)
    response = await open_stream(make_client(), chat_url(up))
    if slow:  # the relay was busy elsewhere: the end of the body and the close both wait unread
        await until(lambda: up.open_connections == 0)
        await asyncio.sleep(0.05)
    items: list[bytes] = []
    with pytest.raises(httpx.TransportError) as info:
        await collect(response, items)
    await response.aclose()
    assert isinstance(info.value, httpx.RemoteProtocolError | httpx.ReadError)
    assert b"".join(items) == b"".join(writes)
    assert not sent_secret(info.value)


@pytest.mark.parametrize(
    "garbage",
    [b"zz\r\nhello\r\n", b"5\r\nhello-and-more\r\n", b"5\r\nhel"],
    ids=["bad-size", "chunk-overrun", "truncated-chunk"],
)
async def test_broken_chunk_framing_is_a_transport_error(make_client: ClientFactory, garbage: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED_HEAD + frame(b"data: ok\n\n"))
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(garbage)
        await writer.drain()
        await asyncio.sleep(0.02)
        # and the connection closes

    async with RawServer(handler) as server:
        response = await open_stream(make_client(), server.url)
        items: list[bytes] = []
        with pytest.raises(httpx.TransportError):
            await collect(response, items)  # aiohttp alone waited here forever
        await response.aclose()
    assert b"".join(items).startswith(b"data: ok\n\n")


async def test_a_malformed_response_head_is_a_remote_protocol_error(make_client: ClientFactory) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 OK-ish\r\nbroken header line\r\n\r\n")
        await writer.drain()

    async with RawServer(handler) as server:
        with pytest.raises(httpx.RemoteProtocolError):
            await open_stream(make_client(), server.url)


# --------------------------------------------------------------------------- closing


async def test_closing_mid_body_closes_the_connection_at_once(up: FakeUpstream, make_client: ClientFactory) -> None:
    up.on("slow", Reply(writes=sse_chunks([f"t{i}" for i in range(100)]), delay=0.05))
    client = make_client(max_connections=1)
    response = await open_stream(client, chat_url(up), model="slow")
    async for _ in response.aiter_raw():
        break
    closed_at = time.monotonic()
    await response.aclose()
    await response.aclose()  # twice is fine
    rec = up.requests[0]
    await asyncio.wait_for(rec.disconnected.wait(), 1.0)
    assert rec.disconnected_at is not None
    assert rec.disconnected_at - closed_at < 1.0
    # The closed connection is not reused, and its slot is free again.
    assert b"".join(await read_all(await open_stream(client, chat_url(up), t=timeout(pool=0.1))))
    assert up.connections_accepted == 2


@pytest.mark.parametrize("where", ["shielded-finally", "caller"])
async def test_a_task_cancelled_while_reading_leaves_nothing_open(
    up: FakeUpstream, make_client: ClientFactory, where: str
) -> None:
    up.on("held", Reply(writes=sse_chunks(["a"]), hold_open=True))
    client = make_client(max_connections=1)
    response = await open_stream(client, chat_url(up), model="held")
    first = asyncio.Event()

    async def relay() -> None:
        try:
            async for _ in response.aiter_raw():
                first.set()
        finally:
            if where == "shielded-finally":
                with anyio.CancelScope(shield=True):
                    await response.aclose()

    task = asyncio.ensure_future(relay())
    await asyncio.wait_for(first.wait(), 1.0)
    await asyncio.sleep(0.02)  # blocked in the read now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    if where == "caller":
        await response.aclose()
    await asyncio.wait_for(up.requests[0].disconnected.wait(), 1.0)
    assert await until(lambda: up.open_connections == 0)
    assert b"".join(await read_all(await open_stream(client, chat_url(up), t=timeout(pool=0.1))))


async def test_a_task_cancelled_while_waiting_for_the_head_leaves_nothing_open(
    up: FakeUpstream, make_client: ClientFactory
) -> None:
    up.on("late", Reply(writes=sse_chunks(["a"]), head_delay=5.0))
    client = make_client(max_connections=1)
    task = asyncio.ensure_future(open_stream(client, chat_url(up), model="late"))
    assert await until(lambda: len(up.requests) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(up.requests[0].disconnected.wait(), 1.0)
    assert b"".join(await read_all(await open_stream(client, chat_url(up), t=timeout(pool=0.1))))


async def test_a_read_abandoned_by_a_timeout_scope_closes_the_connection(
    up: FakeUpstream, make_client: ClientFactory
) -> None:
    # What the provider's brief drain after [DONE] does: anyio.move_on_after around the reads.
    up.on("held", Reply(writes=sse_chunks(["a"]), hold_open=True))
    client = make_client(max_connections=1)
    response = await open_stream(client, chat_url(up), model="held")
    with anyio.move_on_after(0.1):
        async for _ in response.aiter_raw():
            pass
    await response.aclose()
    await asyncio.wait_for(up.requests[0].disconnected.wait(), 1.0)
    assert b"".join(await read_all(await open_stream(client, chat_url(up), t=timeout(pool=0.1))))


# --------------------------------------------------------------------------- the pool


async def test_idle_connections_are_bounded(up: FakeUpstream, make_client: ClientFactory) -> None:
    up.default = Reply(writes=sse_chunks(["a", "b"]), delay=0.05)
    client = make_client(max_connections=4, max_idle_connections=1)

    async def fetch() -> bytes:
        return b"".join(await read_all(await open_stream(client, chat_url(up))))

    bodies = await asyncio.gather(fetch(), fetch(), fetch())
    assert all(bodies)
    assert up.connections_accepted == 3
    assert await until(lambda: up.open_connections == 1)  # two closed, one kept
    await read_all(await open_stream(client, chat_url(up)))
    assert up.connections_accepted == 3  # and that one is reused


async def test_an_idle_connection_expires_after_keepalive_expiry(up: FakeUpstream, make_client: ClientFactory) -> None:
    client = make_client(keepalive_expiry=0.2)
    await read_all(await open_stream(client, chat_url(up)))
    assert up.open_connections == 1
    assert await until(lambda: up.open_connections == 0)
    await read_all(await open_stream(client, chat_url(up)))
    assert up.connections_accepted == 2


async def test_no_idle_connections_means_no_keep_alive(up: FakeUpstream, make_client: ClientFactory) -> None:
    client = make_client(max_idle_connections=0)
    for _ in range(2):
        assert b"".join(await read_all(await open_stream(client, chat_url(up))))
    assert up.connections_accepted == 2


async def test_closing_the_transport_closes_every_connection(up: FakeUpstream) -> None:
    up.on("held", Reply(writes=sse_chunks(["a"]), hold_open=True))
    client = httpx.AsyncClient(
        transport=HTTP11Transport(max_connections=4, max_idle_connections=4, keepalive_expiry=30)
    )
    try:
        held = await open_stream(client, chat_url(up), model="held")
        await read_all(await open_stream(client, chat_url(up)))  # on a second connection, left idle
        assert up.open_connections == 2
    finally:
        await client.aclose()
    assert await until(lambda: up.open_connections == 0)
    with pytest.raises(httpx.TransportError):
        await collect(held, [])
    await held.aclose()


async def test_closing_an_unused_transport_is_fine() -> None:
    transport = HTTP11Transport(max_connections=1, max_idle_connections=1, keepalive_expiry=1)
    await transport.aclose()
    await transport.aclose()


# --------------------------------------------------------------------------- one item per socket read


async def test_each_socket_read_is_one_item_however_many_chunks_it_holds(make_client: ClientFactory) -> None:
    groups = [[b"data: %d-%d\n\n" % (g, i) for i in range(10)] for g in range(5)]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED_HEAD)
        for group in groups:  # ten HTTP chunks per write, each write after the client took the last
            await asyncio.sleep(0.03)
            writer.write(b"".join(frame(event) for event in group))
            await writer.drain()
        await asyncio.sleep(0.03)
        writer.write(LAST_CHUNK)
        await writer.drain()

    async with RawServer(handler) as server:
        items = await read_all(await open_stream(make_client(), server.url))
    assert items == [b"".join(group) for group in groups]


async def test_a_chunk_header_split_across_reads(make_client: ClientFactory) -> None:
    data = b"data: split-header\n\n"
    assert len(data) == 0x14
    # The size line, the data, its CRLF and the last chunk, all cut mid-way.
    pieces = [b"1", b"4", b"\r", b"\n" + data[:5], data[5:] + b"\r", b"\n", b"0\r", b"\n\r", b"\n"]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(CHUNKED_HEAD)
            for piece in pieces:
                await writer.drain()
                await asyncio.sleep(0.02)
                writer.write(piece)
            await writer.drain()

    async with RawServer(handler) as server:
        client = make_client()
        items = await read_all(await open_stream(client, server.url))
        assert b"".join(items) == data
        assert len(items) >= 2
        # The end of the body was found across reads too: the connection is reused.
        assert b"".join(await read_all(await open_stream(client, server.url))) == data
        assert server.connections == 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=48), max_size=8),
    cuts=st.sets(st.integers(min_value=1, max_value=4096), max_size=12),
    trailer=st.booleans(),
)
async def test_a_chunked_answer_cut_anywhere_across_socket_writes_arrives_exactly(
    chunks: list[bytes], cuts: set[int], trailer: bool
) -> None:
    end = b"0\r\nx-trailer: yes\r\n\r\n" if trailer else LAST_CHUNK
    wire = CHUNKED_HEAD + b"".join(frame(chunk) for chunk in chunks) + end
    points = sorted({cut % len(wire) for cut in cuts} - {0})
    pieces = [wire[start:stop] for start, stop in zip([0, *points], [*points, len(wire)], strict=True)]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            for piece in pieces:  # the head is cut too
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.002)  # most pieces arrive as reads of their own

    async with RawServer(handler) as server:
        transport = HTTP11Transport(max_connections=1, max_idle_connections=1, keepalive_expiry=30)
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(2):
                response = await open_stream(client, server.url)
                assert response.status_code == 200
                assert "x-trailer" not in response.headers
                assert b"".join(await read_all(response)) == b"".join(chunks)
        assert server.connections == 1  # the end was found wherever the cuts fell


# --------------------------------------------------------------------------- backpressure


async def settled(value: Callable[[], int], *, quiet: float = 0.3, within: float = 10.0) -> int:
    """``value()`` once it has not changed for ``quiet`` seconds."""
    deadline = time.monotonic() + within
    last, since = value(), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        current = value()
        if current != last:
            last, since = current, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return last
    raise AssertionError(f"still changing after {within} s")


async def test_a_consumer_that_stops_reading_makes_the_server_block_after_a_bound(make_client: ClientFactory) -> None:
    piece = frame(b"x" * 65536)
    pieces = 512  # a 32 MiB answer
    written = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await read_request(reader)
        writer.write(CHUNKED_HEAD)
        for _ in range(pieces):
            writer.write(piece)
            await writer.drain()
            written += len(piece)
        writer.write(LAST_CHUNK)
        await writer.drain()

    async with RawServer(handler) as server:
        response = await open_stream(make_client(), server.url, t=timeout(10.0))
        reads = response.aiter_raw()
        received = len(await reads.__anext__())
        # The consumer is busy now; the server writes until the socket buffers are full.
        bound = await settled(lambda: written)
        ours = response.stream._stream  # type: ignore[attr-defined]  # httpx's wrapper around our stream
        assert ours.buffered <= 64 * 1024 + 256 * 1024  # our part: the pause mark plus one socket read
        # The rest is the kernel's (both sockets' buffers): 3.75 MiB measured on loopback; without the
        # pause the server wrote the whole 32 MiB into our buffer.
        assert bound < 16 * 1024 * 1024
        async for chunk in reads:  # and reading again resumes the socket, to the end
            received += len(chunk)
        assert written == pieces * len(piece)
        assert received == pieces * 65536


# --------------------------------------------------------------------------- the read timeout


async def test_a_trickle_within_the_read_timeout_never_times_out(up: FakeUpstream, make_client: ClientFactory) -> None:
    # One timer per waiting connection, re-armed from the last data: 13 gaps of 0.1 s under 0.25 s.
    writes = sse_chunks([f"t{i}" for i in range(10)])
    up.default = Reply(writes=writes, delay=0.1)
    response = await open_stream(make_client(), chat_url(up), t=timeout(0.25))
    items: list[bytes] = []
    await collect(response, items, within=5.0)
    assert b"".join(items) == b"".join(writes)


async def test_a_reader_busy_for_longer_than_the_read_timeout_gets_no_timeout(make_client: ClientFactory) -> None:
    # The timeout bounds waiting for data, not the time between two pieces of it.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED_HEAD + frame(b"data: a\n\n"))
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.write(frame(b"data: b\n\n") + LAST_CHUNK)
        await writer.drain()

    async with RawServer(handler) as server:
        response = await open_stream(make_client(), server.url, t=timeout(0.3))
        reads = response.aiter_raw()
        assert await reads.__anext__() == b"data: a\n\n"
        await asyncio.sleep(0.4)  # busy elsewhere; then 0.1 s of waiting for b
        assert [chunk async for chunk in reads] == [b"data: b\n\n"]


# --------------------------------------------------------------------------- keep-alive


async def test_a_connection_the_server_closed_while_idle_is_not_handed_out(make_client: ClientFactory) -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")  # keep-alive, it says
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()  # ... and closes it while it is idle
        await writer.wait_closed()
        closed.set()

    async with RawServer(handler) as server:
        client = make_client()
        assert b"".join(await read_all(await open_stream(client, server.url))) == b"ok"
        await asyncio.wait_for(closed.wait(), 1.0)
        await asyncio.sleep(0.05)
        # No error to retry: the closed connection left the pool when it closed.
        assert b"".join(await read_all(await open_stream(client, server.url))) == b"ok"
        assert server.connections == 2


async def test_unasked_for_bytes_on_an_idle_connection_drop_it(make_client: ClientFactory) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstale")  # a response to nothing
        await writer.drain()
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async with RawServer(handler) as server:
        client = make_client()
        assert b"".join(await read_all(await open_stream(client, server.url))) == b"ok"
        await asyncio.sleep(0.2)
        assert b"".join(await read_all(await open_stream(client, server.url))) == b"ok"  # not "stale"
        assert server.connections == 2


@pytest.mark.parametrize(
    ("head", "version"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 2\r\n\r\n", "HTTP/1.1"),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n", "HTTP/1.0"),
    ],
    ids=["connection-close", "http-1.0"],
)
async def test_a_response_that_ends_its_connection_is_not_reused(
    make_client: ClientFactory, head: bytes, version: str
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(head + b"ok")
            await writer.drain()

    async with RawServer(handler) as server:
        client = make_client()
        for _ in range(2):
            response = await open_stream(client, server.url)
            assert response.http_version == version
            assert b"".join(await read_all(response)) == b"ok"
        assert server.connections == 2


async def test_a_body_delimited_by_the_end_of_the_connection_ends_cleanly(
    up: FakeUpstream, make_client: ClientFactory
) -> None:
    writes = sse_chunks(["a", "b", "c"])
    up.default = Reply(writes=writes, close_delimited=True)
    client = make_client()
    for _ in range(2):
        items: list[bytes] = []
        await collect(await open_stream(client, chat_url(up)), items)  # no error at the end
        assert b"".join(items) == b"".join(writes)
    assert up.connections_accepted == 2


async def test_interim_responses_are_skipped(make_client: ClientFactory) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(
                b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n"
                b"HTTP/1.1 201 Created\r\nx-final: yes\r\ncontent-length: 2\r\n\r\nok"
            )
            await writer.drain()

    async with RawServer(handler) as server:
        client = make_client()
        for _ in range(2):
            response = await open_stream(client, server.url)
            assert (response.status_code, response.reason_phrase) == (201, "Created")
            assert response.headers["x-final"] == "yes"
            assert "link" not in response.headers
            assert b"".join(await read_all(response)) == b"ok"
        assert server.connections == 1


async def test_a_head_response_and_a_204_have_no_body(make_client: ClientFactory) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            if request.startswith(b"HEAD "):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()

    async with RawServer(handler) as server:
        client = make_client()
        response = await client.head(server.url, timeout=timeout())
        assert (response.status_code, response.content) == (200, b"")
        assert response.headers["content-length"] == "1234"
        for _ in range(2):
            response = await client.get(server.url, timeout=timeout())
            assert (response.status_code, response.content) == (204, b"")
        # The HEAD response's connection is closed (its parser waits for a body); the 204's is kept.
        assert server.connections == 2


async def test_responses_open_counts_responses_until_their_end_or_close(
    up: FakeUpstream, make_client: ClientFactory
) -> None:
    up.on("held", Reply(writes=sse_chunks(["a"]), hold_open=True))
    client = make_client()
    transport = client._transport
    assert isinstance(transport, HTTP11Transport)
    held = await open_stream(client, chat_url(up), model="held")
    whole = await open_stream(client, chat_url(up))
    assert transport.responses_open == 2
    await read_all(whole)
    assert transport.responses_open == 1
    await held.aclose()
    assert transport.responses_open == 0


# --------------------------------------------------------------------------- requests


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(make_client: ClientFactory) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with RawServer(handler) as server:
        client = make_client()
        with pytest.raises(httpx.LocalProtocolError) as info:
            await client.get(server.url, headers={"x-evil": "1\r\nx-injected: 2"})
        assert "injected" not in str(info.value)
        assert not sent_secret(info.value)
        assert server.connections == 0


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A test CA and a certificate it signed for 127.0.0.1: (CA, certificate, key)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    where = tmp_path_factory.mktemp("tls")
    ca, ca_key, cert, key, csr, ext = (where / name for name in ("ca.pem", "ca.key", "c.pem", "c.key", "c.csr", "x"))
    ext.write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_extensions = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    sign = ["-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-extfile", ext]
    for command in (
        ["req", "-x509", *ec, *ca_extensions, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=test-ca"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, *sign, "-out", cert, "-days", "2"],
    ):
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True, timeout=30)
    return ca, cert, key


async def test_https_goes_over_tls_checked_against_the_default_trust_store(
    tls_files: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch, make_client: ClientFactory
) -> None:
    ca, cert, key = tls_files
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecret")
            await writer.drain()

    async with RawServer(handler, tls=server_context) as server:
        # Not trusted by the system's store: refused, as httpx's own transport would.
        with pytest.raises(httpx.ConnectError) as info:
            await open_stream(make_client(), server.url)
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        # The default context reads the trust store from SSL_CERT_FILE when it is made.
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        client = make_client()
        for _ in range(2):
            assert b"".join(await read_all(await open_stream(client, server.url))) == b"secret"
        assert server.connections == 1  # kept alive (a refused handshake never reaches the handler)
