"""A small, fast fake LLM server (OpenAI-compatible, and Ollama's own API) for integration tests and benchmarks.

Plain asyncio (``asyncio.start_server``) and hand-written HTTP/1.1, no framework, so that
every byte, write boundary, delay and disconnect on the wire is under the test's control.

In-process, on the test's own event loop::

    async with FakeUpstream() as up:
        up.on("slow", Reply(writes=sse_chunks(["a", "b"]), delay=0.5))
        ...  # point the service at up.base_url
        assert up.requests[-1].body["model"] == "slow"

As its own process (the benchmark's upstream)::

    python -m tests.fake_upstream --port 0      # prints "READY <port>", serves until SIGTERM

Routes: ``POST /v1/chat/completions`` answers with the reply registered for the body's
``model`` (:meth:`FakeUpstream.on`), else the default reply. A model named like
``bench:tokens=500:per_write=50:delay_ms=0:framing=event`` generates ``tok1 tok2 …`` on the
fly from pre-encoded bytes (see :func:`bench_text` and :class:`BenchSpec`): ``per_write``
events per socket write, each event its own HTTP chunk as real servers send them
(``framing=grouped``: one HTTP chunk per write). ``GET /v1/models`` lists the registered models;
``GET /_fake/stats`` gives the connection and request counts (for a fake in another process).

Ollama's API: ``POST /api/chat`` answers like the chat route (the reply registered for the
body's ``model``, else the default, which is NDJSON here: :func:`ndjson_chunks`), ``GET
/api/tags`` lists the registered models as Ollama does; point an ``ollama`` provider at
:attr:`FakeUpstream.root_url`. :meth:`FakeUpstream.route` answers one method and path with a
reply of its own (a slow or failing ``/v1/models``, a listing with context windows).
Anything else is a 404 with an OpenAI-style ``{"error": {...}}`` body.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeAlias

__all__ = (
    "BENCH_FRAMINGS",
    "BenchSpec",
    "FakeUpstream",
    "Recorded",
    "Reply",
    "ReplyFactory",
    "bench_text",
    "ndjson_chunks",
    "ndjson_line",
    "parse_bench_model",
    "sse_chunks",
    "sse_event",
)

_MAX_HEAD = 64 * 1024
_MAX_BODY = 16 * 1024 * 1024
_READ_SIZE = 64 * 1024
_BENCH_CACHE_MAX = 64

_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _default_headers() -> dict[str, str]:
    return {"content-type": "text/event-stream"}


@dataclasses.dataclass
class Reply:
    """What the fake sends back for one request.

    Framing headers (``transfer-encoding``/``content-length``/``connection``) are added by
    the server according to the fields below; don't put them in ``headers``.
    """

    status: int = 200
    """HTTP status code."""
    headers: dict[str, str] = dataclasses.field(default_factory=_default_headers)
    """Response headers (lower-case names preferred)."""
    writes: list[bytes] = dataclasses.field(default_factory=list)
    """The body, one transport write per item (chunked framing adds its own bytes around each)."""
    delay: float = 0.0
    """Seconds to wait before each write after the first (the first follows the headers at once)."""
    head_delay: float = 0.0
    """Seconds to wait before sending the status line and headers (silence before headers)."""
    hold_open: bool = False
    """After the last write, keep the connection open, body unfinished, until the client leaves."""
    close_delimited: bool = False
    """No length and no chunking: the body ends when the server closes the connection."""
    content_length: bool = False
    """Send ``content-length`` (the sum of ``writes``) instead of chunked framing."""
    close_abruptly: bool = False
    """After the writes, drop the connection without ending the body (no terminating chunk)."""
    reset: bool = False
    """With ``close_abruptly``: close with a TCP RST (SO_LINGER 0) instead of a FIN."""
    chunk_per_event: bool = False
    """Chunked replies: frame each SSE event of a ``writes`` item as its own HTTP chunk, as real
    servers do (the item is split after every blank line that ends an event; anything after the
    last one is a chunk of its own); still one transport write per item. Off: one chunk per item."""

    @classmethod
    def json(cls, obj: object, status: int = 200, *, headers: dict[str, str] | None = None) -> Reply:
        """A JSON body with a content-length, e.g. an upstream error reply."""
        hdrs = {"content-type": "application/json"}
        if headers:
            hdrs.update(headers)
        return cls(status=status, headers=hdrs, writes=[json.dumps(obj).encode()], content_length=True)

    @classmethod
    def sse(cls, tokens: list[str], *, delay: float = 0.0, chunk_per_event: bool = False, **kwargs: Any) -> Reply:
        """A normal streamed answer: :func:`sse_chunks` of ``tokens`` (other kwargs go there)."""
        return cls(writes=sse_chunks(tokens, **kwargs), delay=delay, chunk_per_event=chunk_per_event)

    @classmethod
    def ndjson(cls, tokens: list[str], *, delay: float = 0.0, **kwargs: Any) -> Reply:
        """A normal streamed Ollama answer: :func:`ndjson_chunks` of ``tokens`` (other kwargs go there)."""
        return cls(headers=_ndjson_headers(), writes=ndjson_chunks(tokens, **kwargs), delay=delay)


@dataclasses.dataclass
class Recorded:
    """One request the fake received, and what became of its reply."""

    method: str
    path: str
    headers: dict[str, str]
    """Request headers, names lower-cased (a repeated header keeps its last value)."""
    raw_body: bytes
    body: Any
    """The parsed JSON body, or ``None`` if it was not JSON."""
    started_at: float
    """``time.monotonic()`` when the request (head and body) had been read."""
    finished_at: float | None = None
    """When the last byte of the reply was written (never set for ``hold_open``)."""
    disconnected_at: float | None = None
    """When the client closed the connection before the reply had finished, else ``None``."""
    writes_done: int = 0
    """How many of the reply's ``writes`` were written."""
    disconnected: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    """Set when ``disconnected_at`` is."""

    @property
    def model(self) -> str | None:
        """The body's ``model``, if any."""
        if isinstance(self.body, dict):
            model = self.body.get("model")
            return model if isinstance(model, str) else None
        return None


ReplyFactory: TypeAlias = Callable[[Recorded], Reply]
"""Builds a reply from the request, for replies that depend on it."""


# --------------------------------------------------------------------------- SSE helpers


def sse_event(obj: object) -> bytes:
    """One SSE ``data:`` event carrying ``obj`` as compact JSON."""
    return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def _chunk_obj(model: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": choices,
    }
    obj.update(extra)
    return obj


def _sse_events(
    tokens: list[str],
    *,
    finish_reason: str | None,
    usage: dict[str, Any] | None,
    done: bool,
    model: str,
) -> tuple[bytes, list[bytes], list[bytes]]:
    """Return (role chunk, one event per token, tail events)."""
    role = sse_event(
        _chunk_obj(model, [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    )
    body = [
        sse_event(_chunk_obj(model, [{"index": 0, "delta": {"content": tok}, "finish_reason": None}])) for tok in tokens
    ]
    tail: list[bytes] = []
    if finish_reason is not None:
        tail.append(sse_event(_chunk_obj(model, [{"index": 0, "delta": {}, "finish_reason": finish_reason}])))
    if usage is not None:
        tail.append(sse_event(_chunk_obj(model, [], usage=usage)))
    if done:
        tail.append(b"data: [DONE]\n\n")
    return role, body, tail


def sse_chunks(
    tokens: list[str],
    *,
    per_write: int = 1,
    finish_reason: str | None = "stop",
    usage: dict[str, Any] | None = None,
    done: bool = True,
    model: str = "fake",
) -> list[bytes]:
    """Realistic OpenAI streaming chunks for ``tokens``, grouped ``per_write`` events per write.

    The events are: a role-only first chunk (``delta: {"role": "assistant", "content": ""}``),
    one chunk per token, a final chunk with ``finish_reason`` (left out when it is ``None``), a
    usage-only chunk with empty ``choices`` (when ``usage`` is given), then ``data: [DONE]``
    (when ``done``). Every event counts towards ``per_write``.
    """
    if per_write < 1:
        raise ValueError("per_write must be >= 1")
    role, body, tail = _sse_events(tokens, finish_reason=finish_reason, usage=usage, done=done, model=model)
    events = [role, *body, *tail]
    return [b"".join(events[i : i + per_write]) for i in range(0, len(events), per_write)]


# --------------------------------------------------------------------------- Ollama's NDJSON


def _ndjson_headers() -> dict[str, str]:
    return {"content-type": "application/x-ndjson"}


def ndjson_line(obj: object) -> bytes:
    """One NDJSON line carrying ``obj`` as compact JSON, non-ASCII as it is (as Ollama writes it)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def ndjson_chunks(
    tokens: list[str],
    *,
    per_write: int = 1,
    thinking: list[str] | None = None,
    done_reason: str | None = "stop",
    usage: tuple[int, int] | None = (5, 7),
    done: bool = True,
    model: str = "fake",
) -> list[bytes]:
    """Ollama ``/api/chat`` lines for ``tokens``, grouped ``per_write`` lines per write.

    The lines: one per ``thinking`` piece (``message.thinking``), one per token
    (``message.content``), then (when ``done``) the final ``"done": true`` line with
    ``done_reason`` (left out when ``None``) and ``usage`` as ``prompt_eval_count`` / ``eval_count``.
    """
    if per_write < 1:
        raise ValueError("per_write must be >= 1")
    stamp = "2025-01-01T00:00:00.000000Z"

    def line(message: dict[str, str], **extra: Any) -> bytes:
        return ndjson_line({"model": model, "created_at": stamp, "message": message, "done": False, **extra})

    events = [line({"role": "assistant", "content": "", "thinking": piece}) for piece in thinking or ()]
    events += [line({"role": "assistant", "content": token}) for token in tokens]
    if done:
        final: dict[str, Any] = {"done": True, "total_duration": 1000, "load_duration": 10}
        if done_reason is not None:
            final["done_reason"] = done_reason
        if usage is not None:
            final.update(prompt_eval_count=usage[0], prompt_eval_duration=20, eval_count=usage[1], eval_duration=30)
        events.append(line({"role": "assistant", "content": ""}, **final))
    return [b"".join(events[i : i + per_write]) for i in range(0, len(events), per_write)]


# --------------------------------------------------------------------------- bench mode


BENCH_FRAMINGS = ("event", "grouped")
"""How a bench answer frames its events in HTTP chunks; the first is the default."""


@dataclasses.dataclass(frozen=True)
class BenchSpec:
    """A generated answer, parsed from a model name like ``bench:tokens=500:per_write=50:delay_ms=0``.

    Every key is optional (``framing=grouped`` may be added): ``tokens`` tokens, ``per_write``
    events per socket write (the role chunk rides with the first group, the tail with the last),
    ``delay_ms`` between writes, and ``framing``: ``event`` (the default) makes every SSE event
    its own HTTP chunk, as real servers (llama.cpp, vLLM, Starlette) send them; ``grouped``
    packs each write's events into one HTTP chunk.
    """

    tokens: int = 20
    per_write: int = 1
    delay_ms: float = 0.0
    framing: str = "event"

    @property
    def model(self) -> str:
        """The model name that asks for this answer (:func:`parse_bench_model` gives it back)."""
        return (
            f"bench:tokens={self.tokens}:per_write={self.per_write}:delay_ms={self.delay_ms:g}:framing={self.framing}"
        )


def parse_bench_model(model: str) -> BenchSpec | None:
    """The :class:`BenchSpec` a ``bench:…`` model name asks for, or ``None`` for other names."""
    if not model.startswith("bench"):
        return None
    parts = model.split(":")
    if parts[0] != "bench":
        return None
    values: dict[str, float] = {}
    framing = BENCH_FRAMINGS[0]
    for part in parts[1:]:
        key, sep, val = part.partition("=")
        if not sep:
            return None
        if key == "framing":
            if val not in BENCH_FRAMINGS:
                return None
            framing = val
            continue
        if key not in ("tokens", "per_write", "delay_ms"):
            return None
        try:
            values[key] = float(val)
        except ValueError:
            return None
    try:
        spec = BenchSpec(
            tokens=int(values.get("tokens", 20)),
            per_write=int(values.get("per_write", 1)),
            delay_ms=values.get("delay_ms", 0.0),
            framing=framing,
        )
    except (ValueError, OverflowError):  # nan / inf counts
        return None
    if not (0 <= spec.tokens <= 10_000_000 and spec.per_write >= 1 and spec.delay_ms >= 0):
        return None
    return spec


def bench_text(tokens: int) -> str:
    """The answer text a ``bench:tokens=N`` model produces: ``"tok1 tok2 … tokN "``."""
    return "".join(f"tok{i} " for i in range(1, tokens + 1))


def _bench_writes(spec: BenchSpec, model: str) -> list[bytes]:
    """Chunked-framed writes for a bench answer: exactly max(1, ceil(tokens / per_write)) of them.

    The role chunk rides with the first group of tokens and the tail (finish, usage,
    ``[DONE]``, terminating chunk) with the last, so each write carries ``per_write`` tokens.
    ``framing=event``: each event is its own HTTP chunk; ``grouped``: a write's token events
    are one chunk (the role chunk included) and its tail events another.
    """
    toks = [f"tok{i} " for i in range(1, spec.tokens + 1)]
    usage = {"prompt_tokens": 5, "completion_tokens": spec.tokens, "total_tokens": spec.tokens + 5}
    role, body, tail = _sse_events(toks, finish_reason="stop", usage=usage, done=True, model=model)
    groups = [body[i : i + spec.per_write] for i in range(0, len(body), spec.per_write)] or [[]]
    groups[0] = [role, *groups[0]]
    if spec.framing == "grouped":
        framed = [_frame_chunk(b"".join(g)) for g in groups]
        framed[-1] += _frame_chunk(b"".join(tail))
    else:
        groups[-1] = [*groups[-1], *tail]
        framed = [b"".join(_frame_chunk(ev) for ev in g) for g in groups]
    framed[-1] += b"0\r\n\r\n"
    return framed


def _frame_chunk(data: bytes) -> bytes:
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


def _frame_events(data: bytes) -> bytes:
    """``data`` framed one HTTP chunk per SSE event (split after each event-ending blank line; the rest is one more)."""
    out: list[bytes] = []
    start = 0
    while (end := data.find(b"\n\n", start)) >= 0:
        out.append(_frame_chunk(data[start : end + 2]))
        start = end + 2
    out.append(_frame_chunk(data[start:]))
    return b"".join(out)


_BENCH_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream\r\n"
    b"cache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n"
    b"server: fake-upstream\r\n\r\n"
)


# --------------------------------------------------------------------------- the server


class _ClientGone(Exception):
    """The client closed the connection (EOF or reset)."""


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Conn:
    """One client connection: a byte buffer in front of the StreamReader, so that a watcher
    task can read (to see EOF) while a reply is being written without losing pipelined bytes.
    """

    __slots__ = ("buf", "eof", "reader", "waiter", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self.eof = False
        self.waiter: asyncio.Future[None] | None = None

    async def fill(self) -> bool:
        """Read more bytes into ``buf``; False at EOF (or reset)."""
        if self.eof:
            return False
        try:
            data = await self.reader.read(_READ_SIZE)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    async def read_head(self) -> bytes | None:
        while True:
            idx = self.buf.find(b"\r\n\r\n")
            if idx >= 0:
                head = bytes(self.buf[:idx])
                del self.buf[: idx + 4]
                return head
            if len(self.buf) > _MAX_HEAD:
                raise _BadRequest(431, "request head too large")
            if not await self.fill():
                if self.buf:
                    raise _ClientGone
                return None

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not await self.fill():
                raise _ClientGone
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def read_line(self) -> bytes:
        while True:
            idx = self.buf.find(b"\r\n")
            if idx >= 0:
                line = bytes(self.buf[:idx])
                del self.buf[: idx + 2]
                return line
            if len(self.buf) > _MAX_HEAD:
                raise _BadRequest(400, "chunk size line too long")
            if not await self.fill():
                raise _ClientGone

    async def read_chunked(self) -> bytes:
        body = bytearray()
        for _ in range(1_000_000):
            size_line = await self.read_line()
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest(400, "bad chunk size") from None
            if size == 0:
                while await self.read_line():  # trailers, up to the empty line
                    pass
                return bytes(body)
            if len(body) + size > _MAX_BODY:
                raise _BadRequest(413, "request body too large")
            body += await self.read_exactly(size)
            await self.read_exactly(2)
        raise _BadRequest(400, "too many chunks")


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError:
        raise _BadRequest(400, "bad request line") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequest(400, "bad header line")
        headers[name.strip().lower()] = value.strip()
    return method, target, version, headers


def _json_error(status: int, message: str, err_type: str = "invalid_request_error") -> Reply:
    return Reply.json({"error": {"message": message, "type": err_type, "code": None}}, status)


_DEFAULT_TOKENS = ["Hello", " from", " the", " fake", " upstream", "!"]


def _default_reply() -> Reply:
    return Reply(writes=sse_chunks(_DEFAULT_TOKENS))


def _default_ollama_reply() -> Reply:
    return Reply.ndjson(_DEFAULT_TOKENS)


class FakeUpstream:
    """A fake OpenAI-compatible server; see the module docstring.

    Attributes:
        default: the reply (or reply factory) for models with no :meth:`on` registration.
        ollama_default: the same for ``POST /api/chat``.
        requests: every request received, in order (when ``record`` is true).
    """

    def __init__(self, *, record: bool = True, default: Reply | ReplyFactory | None = None) -> None:
        self.default: Reply | ReplyFactory = default if default is not None else _default_reply()
        self.ollama_default: Reply | ReplyFactory = _default_ollama_reply()
        self._routes: dict[tuple[str, str], Reply | ReplyFactory] = {}
        self.requests: list[Recorded] = []
        self.record = record
        self._replies: dict[str, Reply | ReplyFactory] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._port = 0
        self._host = "127.0.0.1"
        self._bench_cache: dict[str, list[bytes]] = {}
        self.connections_accepted = 0
        """TCP connections accepted so far (keep-alive reuse shows as fewer than requests)."""
        self.requests_served = 0
        """Requests answered so far, recorded or not."""

    # -- public API

    def on(self, model: str, reply: Reply | ReplyFactory) -> None:
        """Answer requests whose body ``model`` equals ``model`` with ``reply``.

        ``reply`` may be a callable taking the :class:`Recorded` request, for replies that
        depend on the request (or change from one call to the next).
        """
        self._replies[model] = reply

    def route(self, method: str, path: str, reply: Reply | ReplyFactory) -> None:
        """Answer ``method path`` (the path without its query) with ``reply``, before any built-in route."""
        self._routes[(method.upper(), path)] = reply

    @property
    def port(self) -> int:
        return self._port

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:<port>``, the base URL of an ``ollama`` provider."""
        return f"http://{self._host}:{self._port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``, the provider base URL to configure."""
        return f"http://{self._host}:{self._port}/v1"

    @property
    def open_connections(self) -> int:
        """Client connections currently open."""
        return len(self._writers)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Start listening; ``port=0`` picks a free port (see :attr:`port`)."""
        if self._server is not None:
            raise RuntimeError("already started")
        self._server = await asyncio.start_server(self._on_connect, host, port, backlog=1024)
        sock = self._server.sockets[0]
        self._host, self._port = sock.getsockname()[:2]

    async def stop(self) -> None:
        """Stop listening and close every open connection (replies in progress are dropped)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- connection handling

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections_accepted += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(reader, writer)
        abort = False
        try:
            abort = await self._serve(conn)
        except (asyncio.CancelledError, _ClientGone, ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            if abort:
                writer.transport.abort()
            else:
                writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, conn: _Conn) -> bool:
        """Serve requests on one connection until it should close; True means abort it."""
        for _ in range(10_000_000):
            try:
                head = await conn.read_head()
                if head is None:
                    return False
                method, target, version, headers = _parse_head(head)
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    raw = await conn.read_chunked()
                else:
                    try:
                        length = int(headers.get("content-length", "0"))
                    except ValueError:
                        raise _BadRequest(400, "bad content-length") from None
                    if length < 0 or length > _MAX_BODY:
                        raise _BadRequest(413, "bad or too large content-length")
                    raw = await conn.read_exactly(length) if length else b""
            except _BadRequest as exc:
                await self._send_simple(conn, _json_error(exc.status, str(exc)), keep_alive=False)
                return False
            keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            self.requests_served += 1
            rec = Recorded(
                method=method,
                path=target,
                headers=headers,
                raw_body=raw,
                body=None,
                started_at=time.monotonic(),
            )
            keep, abort = await self._dispatch(conn, rec, keep_alive)
            if abort:
                return True
            if not keep:
                return False
        return False

    async def _dispatch(self, conn: _Conn, rec: Recorded, keep_alive: bool) -> tuple[bool, bool]:
        path = rec.path.split("?", 1)[0]
        override = self._routes.get((rec.method, path))
        if override is not None:
            with contextlib.suppress(ValueError):
                rec.body = json.loads(rec.raw_body) if rec.raw_body else None
            self._remember(rec)
            return await self._send_reply(conn, rec, self._build(override, rec), keep_alive)
        if path == "/api/chat" and rec.method == "POST":
            return await self._chat(conn, rec, keep_alive, self.ollama_default, bench=False)
        if path.endswith("/chat/completions"):
            return await self._chat(conn, rec, keep_alive, self.default, bench=True)
        self._remember(rec)
        if path == "/_fake/stats" and rec.method == "GET":
            stats = {
                "connections_accepted": self.connections_accepted,
                "requests_served": self.requests_served,
            }
            return await self._send_simple(conn, Reply.json(stats), keep_alive, rec)
        if path.endswith("/models") and rec.method == "GET":
            ids = ["fake", *self._replies]
            data = {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "fake"} for m in ids]}
            return await self._send_simple(conn, Reply.json(data), keep_alive, rec)
        if path == "/api/tags" and rec.method == "GET":
            tags = [
                {"name": m, "model": m, "modified_at": "2025-01-01T00:00:00Z", "size": 1, "digest": "0", "details": {}}
                for m in ["fake:latest", *self._replies]
            ]
            return await self._send_simple(conn, Reply.json({"models": tags}), keep_alive, rec)
        return await self._send_simple(
            conn, _json_error(404, f"Unexpected endpoint or method. ({rec.method} {path})"), keep_alive, rec
        )

    async def _chat(
        self, conn: _Conn, rec: Recorded, keep_alive: bool, default: Reply | ReplyFactory, *, bench: bool
    ) -> tuple[bool, bool]:
        if rec.method != "POST":
            self._remember(rec)
            return await self._send_simple(conn, _json_error(405, "method not allowed"), keep_alive, rec)
        try:
            rec.body = json.loads(rec.raw_body) if rec.raw_body else None
        except ValueError:
            self._remember(rec)
            return await self._send_simple(conn, _json_error(400, "body is not JSON"), keep_alive, rec)
        self._remember(rec)
        model = rec.model
        if model is not None:
            spec = parse_bench_model(model) if bench and model not in self._replies else None
            if spec is not None:
                return await self._send_bench(conn, rec, spec, model, keep_alive)
            reply_src = self._replies.get(model, default)
        else:
            reply_src = default
        return await self._send_reply(conn, rec, self._build(reply_src, rec), keep_alive)

    @staticmethod
    def _build(reply_src: Reply | ReplyFactory, rec: Recorded) -> Reply:
        try:
            return reply_src if isinstance(reply_src, Reply) else reply_src(rec)
        except Exception as exc:  # a broken test factory: say so on the wire, keep serving
            return _json_error(500, f"reply factory failed: {exc!r}", "server_error")

    def _remember(self, rec: Recorded) -> None:
        if self.record:
            self.requests.append(rec)

    async def _send_simple(
        self, conn: _Conn, reply: Reply, keep_alive: bool, rec: Recorded | None = None
    ) -> tuple[bool, bool]:
        body = b"".join(reply.writes)
        head = _head(reply.status, reply.headers, [("content-length", str(len(body)))], keep_alive)
        conn.writer.write(head + body)
        await conn.writer.drain()
        if rec is not None:
            rec.writes_done = len(reply.writes)
            rec.finished_at = time.monotonic()
        return keep_alive, False

    # -- streamed replies, with a watcher that notices the client leaving

    def _start_watch(self, conn: _Conn, rec: Recorded) -> asyncio.Task[None]:
        return asyncio.ensure_future(self._watch(conn, rec))

    async def _watch(self, conn: _Conn, rec: Recorded) -> None:
        # Reads (and keeps) whatever the client sends while the reply is going out; EOF means
        # the client left. Bounded by the connection: each turn consumes bytes or ends.
        while await conn.fill():
            if len(conn.buf) > _MAX_HEAD + _MAX_BODY:
                return  # a client that floods us; stop watching rather than buffer without end
        self._mark_gone(conn, rec)

    def _mark_gone(self, conn: _Conn, rec: Recorded) -> None:
        if rec.finished_at is None and rec.disconnected_at is None:
            rec.disconnected_at = time.monotonic()
            rec.disconnected.set()
        waiter = conn.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _pause(self, conn: _Conn, rec: Recorded, seconds: float) -> bool:
        """Sleep ``seconds`` unless the client leaves first; False if it left."""
        if rec.disconnected_at is not None or conn.eof:
            return False
        if seconds <= 0:
            return True
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        conn.waiter = fut
        handle = loop.call_later(seconds, _resolve, fut) if seconds != float("inf") else None
        try:
            await fut
        finally:
            if handle is not None:
                handle.cancel()
            conn.waiter = None
        return rec.disconnected_at is None and not conn.eof

    async def _finish_watch(self, watcher: asyncio.Task[None]) -> None:
        if not watcher.done():
            watcher.cancel()
        try:
            await watcher
        except asyncio.CancelledError:
            # The watcher's own cancellation is expected; this task's (stop()) must go on.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise

    async def _send_reply(self, conn: _Conn, rec: Recorded, reply: Reply, keep_alive: bool) -> tuple[bool, bool]:
        writer = conn.writer
        watcher = self._start_watch(conn, rec)
        try:
            if reply.head_delay > 0 and not await self._pause(conn, rec, reply.head_delay):
                return False, False
            chunked = not (reply.close_delimited or reply.content_length)
            keep = keep_alive and not reply.close_delimited and not reply.close_abruptly
            extra: list[tuple[str, str]] = []
            if reply.content_length:
                extra.append(("content-length", str(sum(len(w) for w in reply.writes))))
            elif chunked:
                extra.append(("transfer-encoding", "chunked"))
            writer.write(_head(reply.status, reply.headers, extra, keep))
            await writer.drain()
            for i, data in enumerate(reply.writes):
                if i and reply.delay > 0 and not await self._pause(conn, rec, reply.delay):
                    return False, False
                if rec.disconnected_at is not None:
                    return False, False
                if data:
                    if not chunked:
                        writer.write(data)
                    elif reply.chunk_per_event:
                        writer.write(_frame_events(data))
                    else:
                        writer.write(_frame_chunk(data))
                    await writer.drain()
                rec.writes_done = i + 1
            if reply.hold_open:
                await self._pause(conn, rec, float("inf"))
                return False, False
            if reply.close_abruptly:
                if reply.reset:
                    _set_linger_zero(writer)
                    return False, True
                return False, False
            if chunked:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            rec.finished_at = time.monotonic()
            return keep, False
        except (ConnectionError, OSError):
            self._mark_gone(conn, rec)
            return False, False
        finally:
            await self._finish_watch(watcher)

    async def _send_bench(
        self, conn: _Conn, rec: Recorded, spec: BenchSpec, model: str, keep_alive: bool
    ) -> tuple[bool, bool]:
        writes = self._bench_cache.get(model)
        if writes is None:
            writes = _bench_writes(spec, model)
            if len(self._bench_cache) >= _BENCH_CACHE_MAX:
                self._bench_cache.clear()
            self._bench_cache[model] = writes
        writer = conn.writer
        delay = spec.delay_ms / 1000.0
        watcher = self._start_watch(conn, rec) if delay > 0 else None
        try:
            writer.write(_BENCH_HEAD)
            for i, data in enumerate(writes):
                if i and delay > 0 and not await self._pause(conn, rec, delay):
                    return False, False
                writer.write(data)
                await writer.drain()
            rec.writes_done = len(writes)
            rec.finished_at = time.monotonic()
            return keep_alive, False
        except (ConnectionError, OSError):
            self._mark_gone(conn, rec)
            return False, False
        finally:
            if watcher is not None:
                await self._finish_watch(watcher)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _set_linger_zero(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _head(status: int, headers: dict[str, str], extra: list[tuple[str, str]], keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines.extend(f"{k}: {v}" for k, v in headers.items())
    lines.extend(f"{k}: {v}" for k, v in extra)
    if not keep_alive:
        lines.append("connection: close")
    lines.append("server: fake-upstream")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# --------------------------------------------------------------------------- as a process


async def _serve_forever(host: str, port: int) -> None:
    up = FakeUpstream(record=False)
    await up.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write(f"READY {up.port}\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await up.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed as READY <port>)")
    parser.add_argument("--no-uvloop", action="store_true", help="use the stdlib event loop")
    args = parser.parse_args(argv)
    if not args.no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(_serve_forever(args.host, args.port))
            return
    asyncio.run(_serve_forever(args.host, args.port))


if __name__ == "__main__":
    main()
