"""The benchmark's load client: cheap keep-alive HTTP/1.1 over raw asyncio streams.

It reads the relays' NDJSON (and, for the direct reference, the upstream's SSE), times the
first delta and checks every stream: the concatenated deltas must equal the upstream's text
and the stream must end with exactly one ``done`` line.

For the memory scenario, :func:`hold_streams` opens many streams and keeps each one open,
unread, once its first delta has arrived; :meth:`HttpConn.abort` then drops them the way a
browser's abort does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

__all__ = (
    "FRAMINGS",
    "HeldStreams",
    "HttpConn",
    "LoadResult",
    "NdjsonSink",
    "SseSink",
    "Target",
    "bench_model",
    "bench_text",
    "get_ok",
    "hold_streams",
    "one_stream",
    "pct",
    "run_streams",
    "upstream_connections",
)

HOST = "127.0.0.1"

_decode = msgspec.json.decode


class Sink(Protocol):
    def feed(self, data: bytes) -> None: ...


FRAMINGS = ("event", "grouped")
"""The fake upstream's bench framings (``tests.fake_upstream.BENCH_FRAMINGS``), the default first:
``event`` sends every SSE event as its own HTTP chunk (as real servers do), ``grouped`` one
HTTP chunk per upstream write."""


def bench_model(tokens: int, per_write: int = 1, delay_ms: float = 0.0, framing: str = FRAMINGS[0]) -> str:
    """The fake upstream's model name for a generated answer (see ``tests.fake_upstream.BenchSpec``)."""
    return f"bench:tokens={tokens}:per_write={per_write}:delay_ms={delay_ms:g}:framing={framing}"


def bench_text(tokens: int) -> str:
    """The text of a ``bench:tokens=N`` answer; the same as ``tests.fake_upstream.bench_text``."""
    return "".join(f"tok{i} " for i in range(1, tokens + 1))


def pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


class _Collect:
    def __init__(self) -> None:
        self.data = b""

    def feed(self, data: bytes) -> None:
        self.data += data


async def get_ok(port: int, path: bytes) -> bool:
    """One GET on a fresh connection; True on a 200 (a readiness probe)."""
    conn = HttpConn(HOST, port)
    try:
        async with asyncio.timeout(2):
            status, _ = await conn.request(b"GET", path, b"", _Collect())
        return status == 200
    except (OSError, TimeoutError, ValueError, IndexError):
        return False
    finally:
        conn.close()


async def upstream_connections(conn: HttpConn) -> int:
    """TCP connections the fake upstream has accepted so far (its ``/_fake/stats``)."""
    sink = _Collect()
    async with asyncio.timeout(5):
        await conn.request(b"GET", b"/_fake/stats", b"", sink)
    n: int = json.loads(sink.data)["connections_accepted"]
    return n


class HttpConn:
    """One keep-alive HTTP/1.1 client connection, hand-written to be cheap."""

    __slots__ = ("buf", "host", "port", "reader", "writer")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.buf = bytearray()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
        self.buf.clear()

    def abort(self) -> None:
        """Drop the connection at once, unread bytes and all, as a browser's abort does."""
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None
        self.buf.clear()

    async def _more(self) -> None:
        assert self.reader is not None
        data = await self.reader.read(262144)
        if not data:
            raise ConnectionError("server closed the connection mid-response")
        self.buf += data

    async def request(
        self,
        method: bytes,
        path: bytes,
        body: bytes,
        sink: Sink,
        stop: Callable[[], bool] | None = None,
        headers: bytes = b"",
    ) -> tuple[int, dict[str, str]]:
        """Send one request; feed each decoded body piece to ``sink.feed`` as it arrives.

        With ``stop``, return as soon as it is true after a piece of a chunked body: the
        response is then left unfinished and the connection can only be closed or aborted.
        ``headers`` are extra header lines, each ending in CRLF (``b"x-api-key: k\\r\\n"``).
        """
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.writer is not None
        self.writer.write(
            b"%b %b HTTP/1.1\r\nhost: %b:%d\r\n%bcontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
            % (method, path, self.host.encode(), self.port, headers, len(body), body)
        )
        buf = self.buf
        while (i := buf.find(b"\r\n\r\n")) < 0:
            await self._more()
        head = bytes(buf[:i]).decode("latin-1").split("\r\n")
        del buf[: i + 4]
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "chunked" in headers.get("transfer-encoding", ""):
            while True:
                while (j := buf.find(b"\r\n")) < 0:
                    await self._more()
                size = int(bytes(buf[:j]).split(b";", 1)[0], 16)
                if size == 0:
                    while len(buf) < j + 4:
                        await self._more()
                    del buf[: j + 4]
                    break
                end = j + 2 + size
                while len(buf) < end + 2:
                    await self._more()
                sink.feed(bytes(buf[j + 2 : end]))
                del buf[: end + 2]
                if stop is not None and stop():
                    return status, headers
        elif "content-length" in headers:
            n = int(headers["content-length"])
            while len(buf) < n:
                await self._more()
            if n:
                sink.feed(bytes(buf[:n]))
            del buf[:n]
        else:  # close-delimited
            assert self.reader is not None
            while data := await self.reader.read(262144):
                buf += data
            sink.feed(bytes(buf))
            self.close()
            return status, headers
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers


class NdjsonSink:
    """Reads the relays' NDJSON, times the first delta and checks the stream's shape."""

    __slots__ = ("buf", "errors", "first_delta_at", "lines", "meta", "parts", "terminal")

    def __init__(self) -> None:
        self.buf = b""
        self.parts: list[str] = []
        self.first_delta_at = 0.0
        self.meta = False
        self.terminal: dict[str, Any] | None = None
        self.errors: list[str] = []
        self.lines = 0

    def feed(self, data: bytes) -> None:
        self.buf += data
        if b"\n" not in data:
            return
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            if not line:
                continue
            try:
                obj = _decode(line)
            except msgspec.DecodeError:
                self.errors.append(f"bad JSON line {line[:80]!r}")
                continue
            self.lines += 1
            if self.terminal is not None:
                self.errors.append(f"line after the terminal line: {line[:80]!r}")
            elif "delta" in obj:
                if not self.parts:
                    self.first_delta_at = time.perf_counter()
                if not obj["delta"]:
                    self.errors.append("empty delta")
                self.parts.append(obj["delta"])
            elif "meta" in obj:
                if self.lines != 1:
                    self.errors.append("meta is not the first line")
                self.meta = True
            elif "done" in obj or "error" in obj:
                self.terminal = obj
            elif self.lines == 1:
                self.errors.append(f"first line is not meta: {line[:80]!r}")

    def verdict(self, status: int, expected: str) -> str | None:
        if status != 200:
            return f"HTTP {status}"
        if self.buf.strip():
            self.errors.append(f"unterminated last line {self.buf[:80]!r}")
        if self.errors:
            return "; ".join(self.errors[:3])
        if not self.meta:
            return "no meta line"
        text = "".join(self.parts)
        if text != expected:
            return f"text differs: got {len(text)} chars, want {len(expected)} ({_first_diff(text, expected)})"
        if self.terminal is None:
            return "no terminal line"
        if self.terminal.get("done") is not True:
            return f"ended with {json.dumps(self.terminal)[:200]}"
        if self.terminal.get("finish_reason") != "stop":
            return f"finish_reason {self.terminal.get('finish_reason')!r}"
        return None


class SseSink:
    """Reads the upstream's SSE directly (the TTFD reference): first content chunk, text, [DONE]."""

    __slots__ = ("buf", "done", "finish", "first_delta_at", "parts")

    def __init__(self) -> None:
        self.buf = b""
        self.parts: list[str] = []
        self.first_delta_at = 0.0
        self.done = False
        self.finish: str | None = None

    def feed(self, data: bytes) -> None:
        self.buf += data
        *events, self.buf = self.buf.split(b"\n\n")
        for ev in events:
            if not ev.startswith(b"data:"):
                continue
            payload = ev[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                continue
            obj = _decode(payload)
            for choice in obj.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    if not self.parts:
                        self.first_delta_at = time.perf_counter()
                    self.parts.append(content)
                if choice.get("finish_reason"):
                    self.finish = choice["finish_reason"]

    def verdict(self, status: int, expected: str) -> str | None:
        if status != 200:
            return f"HTTP {status}"
        text = "".join(self.parts)
        if text != expected:
            return f"text differs ({_first_diff(text, expected)})"
        if not self.done or self.finish != "stop":
            return f"ended badly (done={self.done}, finish={self.finish!r})"
        return None


def _first_diff(a: str, b: str) -> str:
    n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return f"first difference at {n}: {a[n : n + 20]!r} vs {b[n : n + 20]!r}"


@dataclass
class Target:
    name: str
    port: int
    direct: bool = False

    def body(self, model: str) -> tuple[bytes, bytes]:
        if self.direct:
            payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
            return b"/v1/chat/completions", json.dumps(payload).encode()
        return b"/chat", json.dumps({"message": "hi", "model": model}).encode()

    def sink(self) -> NdjsonSink | SseSink:
        return SseSink() if self.direct else NdjsonSink()


@dataclass
class StreamResult:
    ttfd: float | None
    failure: str | None


async def one_stream(conn: HttpConn, target: Target, model: str, expected: str, stream_limit: float) -> StreamResult:
    path, body = target.body(model)
    sink = target.sink()
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(stream_limit):
            status, _ = await conn.request(b"POST", path, body, sink)
    except (OSError, ConnectionError, TimeoutError, ValueError, IndexError) as exc:
        conn.close()
        return StreamResult(None, f"{type(exc).__name__}: {exc}")
    failure = sink.verdict(status, expected)
    ttfd = sink.first_delta_at - t0 if sink.first_delta_at else None
    return StreamResult(ttfd, failure)


@dataclass
class HeldStreams:
    """Streams opened by :func:`hold_streams`: each has had its first delta and is still open."""

    conns: list[HttpConn] = field(default_factory=list)
    ttfd: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    wall: float = 0.0
    """Seconds until every stream had its first delta (or had failed)."""

    def abort_all(self) -> None:
        for conn in self.conns:
            conn.abort()
        self.conns.clear()


async def hold_streams(
    target: Target,
    streams: int,
    model: str,
    first_delta: str,
    concurrency: int,
    stream_limit: float,
    total_limit: float,
) -> HeldStreams:
    """Open ``streams`` streams of ``model`` and keep each one open once its first delta is in.

    At most ``concurrency`` streams are being opened at a time (so the listen backlogs do
    not overflow); a stream counts once its first delta (which must be ``first_delta``) has
    arrived, and it is a failure if it ended, failed or took longer than ``stream_limit``.
    The caller owns the returned connections: :meth:`HeldStreams.abort_all` drops them.
    """
    path, body = target.body(model)
    held = HeldStreams()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        conn = HttpConn(HOST, target.port)
        sink = target.sink()
        try:
            async with gate:
                t0 = time.perf_counter()
                async with asyncio.timeout(stream_limit):
                    status, _ = await conn.request(b"POST", path, body, sink, stop=lambda: sink.first_delta_at > 0)
        except (OSError, ConnectionError, TimeoutError, ValueError, IndexError) as exc:
            conn.abort()
            held.failures.append(f"{type(exc).__name__}: {exc}")
            return
        except BaseException:
            conn.abort()
            raise
        failure = None
        if status != 200:
            failure = f"HTTP {status}"
        elif not sink.first_delta_at:
            failure = "the stream ended before its first delta"
        elif isinstance(sink, NdjsonSink) and (sink.errors or sink.terminal is not None or not sink.meta):
            failure = "; ".join(sink.errors[:3]) or f"unexpected line before holding: terminal={sink.terminal}"
        elif "".join(sink.parts) != first_delta:
            failure = f"first delta {''.join(sink.parts)!r}, want {first_delta!r}"
        if failure is not None:
            conn.abort()
            held.failures.append(failure)
            return
        held.conns.append(conn)
        held.ttfd.append(sink.first_delta_at - t0)

    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(total_limit):
            await asyncio.gather(*(one() for _ in range(streams)))
    except TimeoutError:
        held.failures.append(f"opening timed out after {total_limit:.0f}s ({len(held.conns)}/{streams} open)")
    held.wall = time.perf_counter() - t0
    return held


@dataclass
class LoadResult:
    """One scenario run against one target; the CPU fields are filled in by the caller."""

    streams: int = 0
    tokens: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    upstream_cpu: float = 0.0
    client_cpu: float = 0.0
    rss_mb: float = 0.0
    others_cpu: float = 0.0
    upstream_conns: int = 0
    ttfd: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def cpu_per_1k(self) -> float:
        return self.cpu / self.tokens * 1000 if self.tokens else float("nan")

    def record(self, outcome: StreamResult, tokens: int) -> None:
        """Count one finished stream of ``tokens`` tokens."""
        self.streams += 1
        if outcome.ttfd is not None:
            self.ttfd.append(outcome.ttfd)
        if outcome.failure:
            self.failures.append(outcome.failure)
        else:
            self.tokens += tokens


async def run_streams(
    target: Target,
    clients: int,
    streams: int,
    model: str,
    tokens: int,
    stream_limit: float,
    total_limit: float,
) -> LoadResult:
    expected = bench_text(tokens)
    res = LoadResult()
    next_index = iter(range(streams))

    async def worker() -> None:
        conn = HttpConn(HOST, target.port)
        try:
            for _ in next_index:  # shared iterator: each stream index is taken once
                res.record(await one_stream(conn, target, model, expected, stream_limit), tokens)
        finally:
            conn.close()

    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(total_limit):
            await asyncio.gather(*(worker() for _ in range(clients)))
    except TimeoutError:
        res.failures.append(f"scenario timed out after {total_limit:.0f}s ({res.streams}/{streams} streams)")
    res.wall = time.perf_counter() - t0
    return res
