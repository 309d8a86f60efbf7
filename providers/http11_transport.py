"""An httpx transport speaking HTTP/1.1 itself on asyncio protocols and httptools, for cheap relaying of answers.

httpx's own transport (httpcore and h11) hands a streamed body over one HTTP chunk at a time,
through several async-generator layers; a real LLM server sends each SSE event as its own
chunk. Here one socket read is one item of the body: ``data_received`` feeds the read to
httptools (llhttp, the C parser uvicorn uses), the body parts it yields are joined, and the
result goes straight to the waiting reader. httpx stays the client API (``httpx.Request``,
``send(stream=True)``, ``aiter_raw``, respx in tests); only the wire is ours::

    client = httpx.AsyncClient(
        mounts={"all://127.0.0.1": HTTP11Transport(max_connections=64, max_idle_connections=8, keepalive_expiry=30)}
    )

What it keeps from httpx's transport:

* the request goes out exactly as httpx built it (request line, then httpx's headers, Host first,
  then the body, in one write), with no cookies, no redirects and no proxies (mount it only where
  no proxy applies). The body comes back raw, and httpx decodes any ``content-encoding`` itself;
* the per-request ``connect``, ``read`` and ``pool`` timeouts, each raising its own httpx
  exception (the table is in :func:`_lost_error`). Every failure is an ``httpx.TransportError``
  whose message holds no request header and no user-info;
* at most ``max_connections`` responses open at once; waiting for a slot counts against the pool
  timeout. Idle connections are reused for ``keepalive_expiry`` seconds, and at most
  ``max_idle_connections`` are kept. A connection the server closed while idle is never handed out;
* keep-alive as httptools' ``should_keep_alive()`` and the response's ``Connection`` header say.
  A body that runs until the connection closes ends at EOF, 1xx interim responses are skipped,
  and ``http_version`` and ``reason_phrase`` are set as httpx's transport sets them.

What it adds: a read timeout that costs no timer per read (one timer per waiting connection,
re-armed from the time of the last data), and backpressure. Reading from the socket pauses
once more than 64 KiB are unread and resumes when the reader has taken them, so a slow
consumer never makes us buffer a whole answer. Closing a response before its end drops the
connection, which tells the LLM server that nobody is listening any more; a task that is
cancelled can do that too, because closing awaits nothing. A body read to its end puts its
connection back in the pool.

What it does not do: HTTP/2, ``CONNECT`` and upgrades; a streamed request body (it is read into
memory first and sent with a ``Content-Length``); a write timeout (the small request bodies fit
in the socket buffer, and silence after them is the read timeout). TLS uses Python's default
SSL context (the system's CA store, hostname checked, SNI from the ``sni_hostname`` extension
or the host). httpx's ``verify`` and ``cert`` apply only to httpx's own transports, so they do
not reach this one. A ``HEAD`` response's connection is closed after it, not reused.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from typing import TYPE_CHECKING, Final, cast

import httptools
import httpx

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("HTTP11Transport",)

# Reading from the socket pauses once the reader has more than this unread (the buffer can then
# hold at most this plus one socket read), and resumes when the reader has taken it.
_PAUSE_ABOVE: Final = 64 * 1024
# A timer that fires this close to its deadline counts as on time (uvloop's clock has 1 ms steps).
_TIMER_SLACK: Final = 0.001
_SCHEMES: Final = {"http": 80, "https": 443}
_VERSIONS: Final = {"1.1": b"HTTP/1.1", "1.0": b"HTTP/1.0"}
_RESET_ERRNOS: Final = frozenset((errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE))
# A streamed request body is read into memory and sent with a length of our own.
_STREAM_FRAMING: Final = frozenset((b"content-length", b"transfer-encoding"))

_Key = tuple[str, str, int, str | None]  # scheme, host, port, SNI name


class HTTP11Transport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` for HTTP/1.1 over asyncio connections parsed by httptools.

    Args:
        max_connections: responses open at once; one more waits up to the request's ``pool``
            timeout for a slot, then raises ``httpx.PoolTimeout``.
        max_idle_connections: kept-alive connections kept for reuse; one more is closed when its
            response ends. 0 turns keep-alive off.
        keepalive_expiry: seconds an idle connection may wait for reuse before it is closed.
    """

    def __init__(self, *, max_connections: int, max_idle_connections: int, keepalive_expiry: float) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if max_idle_connections < 0:
            raise ValueError("max_idle_connections must not be negative")
        self._max_connections = max_connections
        self._keep_alive = max_idle_connections > 0 and keepalive_expiry > 0
        self._max_idle = max_idle_connections if self._keep_alive else 0
        self._keepalive_expiry = keepalive_expiry
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[_Key, list[_Connection]] = {}
        self._idle_count = 0
        self._streams: set[_ResponseStream] = set()
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and return the response once its head is in; the body streams.

        Raises:
            httpx.TransportError: the specific subclass httpx's own transport would raise
                (``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``, ``ReadTimeout``,
                ``RemoteProtocolError``, …).
        """
        url = request.url
        default_port = _SCHEMES.get(url.scheme)
        if default_port is None:
            raise httpx.UnsupportedProtocol(f"the HTTP/1.1 transport speaks http and https, not {url.scheme!r}")
        if self._closed:
            raise RuntimeError("the transport has been closed")
        raw_headers = request.headers.raw
        try:
            body: bytes = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
            raw_headers = [(name, value) for name, value in raw_headers if name.lower() not in _STREAM_FRAMING]
            raw_headers.append((b"Content-Length", b"%d" % len(body)))
        message = _request_bytes(request.method, url.raw_path, raw_headers, body)
        host = url.raw_host.decode("ascii")
        sni = request.extensions.get("sni_hostname")
        key: _Key = (
            url.scheme,
            host,
            url.port or default_port,
            (sni.decode("ascii") if isinstance(sni, bytes) else sni) if url.scheme == "https" else None,
        )
        timeouts: dict[str, float | None] = request.extensions.get("timeout") or {}
        head_only = request.method == "HEAD"

        await self._acquire_slot(timeouts.get("pool"))
        try:
            conn = self._pooled(key) or await self._connect(key, timeouts.get("connect"))
            stream = _ResponseStream(self)
            try:
                conn.send(stream, message, timeouts.get("read"), head_only)
                # Woken by the head, or by a failure; the timer in ``conn`` bounds the wait.
                while stream.head is None and stream.error is None:
                    await conn.wait()
            except BaseException:
                stream.detach()
                raise
            if stream.error is not None:
                stream.detach()
                raise stream.error
        except BaseException:
            self._slots.release()
            raise
        assert stream.head is not None  # the loop above ends with a head or an error
        status, headers, reason, version = stream.head
        self._streams.add(stream)
        return httpx.Response(
            status, headers=headers, stream=stream, extensions={"http_version": version, "reason_phrase": reason}
        )

    @property
    def responses_open(self) -> int:
        """Responses whose connection is still in use (not yet read to the end, or not closed)."""
        return len(self._streams)

    async def aclose(self) -> None:
        """Close every connection, idle or in use; safe if it was never used, and more than once.

        Responses still open end with an ``httpx.ReadError`` on their next read.
        """
        self._closed = True
        closed = bool(self._streams or self._idle_count)
        for stream in list(self._streams):
            stream.close(httpx.ReadError("the response was cut off: its transport was closed"))
        idle, self._idle, self._idle_count = self._idle, {}, 0
        for conns in idle.values():
            for conn in conns:
                conn.abort()
        if closed:
            await asyncio.sleep(0)  # the transports close their sockets on the next loop turn

    # -- the pool

    async def _acquire_slot(self, pool_timeout: float | None) -> None:
        slots = self._slots
        if not slots.locked() or pool_timeout is None:
            await slots.acquire()  # no timer on the usual path: a slot is free
            return
        try:
            async with asyncio.timeout(max(pool_timeout, 0.0)):
                await slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout(
                f"no free connection within {pool_timeout:g} s: all {self._max_connections} are in use"
            ) from None

    def _pooled(self, key: _Key) -> _Connection | None:
        conns = self._idle.get(key)
        while conns:
            conn = conns.pop()  # the most recently used: the least likely to have been closed
            self._idle_count -= 1
            conn.leave_pool()
            if conn.usable():
                return conn
            conn.abort()
        return None

    async def _connect(self, key: _Key, connect_timeout: float | None) -> _Connection:
        scheme, host, port, sni = key
        origin = _origin(scheme, host, port)
        loop = asyncio.get_running_loop()
        conn = _Connection(self, key, origin, loop)
        context = None
        if scheme == "https":
            context = self._ssl or self._make_ssl_context()
        try:
            async with asyncio.timeout(connect_timeout):
                await loop.create_connection(
                    lambda: conn, host, port, ssl=context, server_hostname=(sni or host) if context else None
                )
        except TimeoutError:
            conn.abort()
            raise httpx.ConnectTimeout(f"timed out connecting to {origin}") from None
        except socket.gaierror as exc:
            # The service tells "no such host" from "nothing listening" by this cause.
            raise httpx.ConnectError(f"could not resolve {host!r}: {exc.strerror or exc}") from exc
        except OSError as exc:  # refused, unreachable, TLS handshake or certificate failure
            raise httpx.ConnectError(f"could not connect to {origin}: {_os_reason(exc)}") from exc
        if self._closed:
            conn.abort()
            raise RuntimeError("the transport has been closed")
        return conn

    def _make_ssl_context(self) -> ssl.SSLContext:
        self._ssl = ssl.create_default_context()
        return self._ssl

    def _release(self, conn: _Connection) -> None:
        """Keep ``conn`` for reuse, or close it (no keep-alive, or enough idle ones already)."""
        if self._closed or self._idle_count >= self._max_idle or not conn.usable():
            conn.close()
            return
        self._idle.setdefault(conn.key, []).append(conn)
        self._idle_count += 1
        conn.enter_pool(self._keepalive_expiry)

    def _unpool(self, conn: _Connection) -> None:
        """``conn``, idle, was closed by the server or has expired."""
        conns = self._idle.get(conn.key)
        if conns is not None and conn in conns:
            conns.remove(conn)
            self._idle_count -= 1

    def _forget(self, stream: _ResponseStream) -> None:
        self._streams.discard(stream)
        self._slots.release()


class _ResponseStream(httpx.AsyncByteStream):
    """One response: its head, then its body, one item per socket read (the hot path).

    The connection fills it: ``buffer`` while nobody waits, the reader's future when someone
    does. Once the body has ended or failed, ``conn`` is ``None`` (the connection is back in the
    pool, or closed) and what is buffered is handed over before the end or the error.
    """

    __slots__ = ("_closed", "_transport", "buffer", "buffered", "conn", "error", "head")

    def __init__(self, transport: HTTP11Transport) -> None:
        self._transport = transport
        self._closed = False
        self.conn: _Connection | None = None
        self.head: tuple[int, list[tuple[bytes, bytes]], bytes, bytes] | None = None
        self.buffer: list[bytes] = []
        self.buffered = 0
        self.error: httpx.TransportError | None = None

    def __aiter__(self) -> _ResponseStream:
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self.buffer:
                return self._take()
            conn = self.conn
            if conn is None:
                if self.error is not None:
                    raise self.error
                self.close()
                raise StopAsyncIteration
            # A cancelled wait leaves nothing behind: the connection sees the future done and
            # buffers instead, and closing the response drops the connection.
            item = await conn.wait()
            if item:
                return item

    def _take(self) -> bytes:
        buffer = self.buffer
        item = buffer[0] if len(buffer) == 1 else b"".join(buffer)
        buffer.clear()
        self.buffered = 0
        conn = self.conn
        if conn is not None and conn.paused:
            conn.resume()
        return item

    async def aclose(self) -> None:
        self.close()

    def close(self, error: httpx.TransportError | None = None) -> None:
        """End the response without awaiting anything, so that a cancelled task can too.

        A body read to its end has already put its connection back in the pool; otherwise the
        connection is closed, which tells the upstream that nobody is listening any more. If the
        body had not ended, reads after this raise ``error`` (an ``httpx.ReadError`` if none is given).
        """
        if self._closed:
            return
        self._closed = True
        if self.error is None and (self.conn is not None or self.buffer):
            self.error = error or httpx.ReadError("the response was closed before its end")
        self.buffer.clear()
        try:
            self.detach()
        finally:
            self._transport._forget(self)

    def detach(self) -> None:
        """Drop the connection if the response is still on it (closed early, or never started)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abandon()


class _Connection(asyncio.Protocol):
    """One connection: writes a request, parses the response with httptools, fills its stream.

    httptools calls ``on_*`` during ``feed_data``; ``on_body`` is the bound ``append`` of a list,
    so that the body parts of one socket read cost no Python call each.
    """

    __slots__ = (
        "_closed_header",
        "_expiry",
        "_framed",
        "_head_in",
        "_head_only",
        "_headers",
        "_interim",
        "_keep",
        "_last",
        "_loop",
        "_message_done",
        "_parser",
        "_parts",
        "_pool",
        "_reason",
        "_stream",
        "_time",
        "_timeout",
        "_timer",
        "_transport",
        "_unsent",
        "_usable",
        "_waiter",
        "key",
        "on_body",
        "origin",
        "paused",
    )

    def __init__(self, pool: HTTP11Transport, key: _Key, origin: str, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self.key = key
        self.origin = origin
        self._loop = loop
        self._time = loop.time
        self._transport: asyncio.Transport | None = None
        self._usable = False  # connected, not closing, no EOF, nothing unexpected received
        self._stream: _ResponseStream | None = None
        self._waiter: asyncio.Future[bytes] | None = None
        self._timeout: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._last = 0.0  # loop time of the last data, or of the start of the last wait
        self.paused = False
        self._unsent = False
        # The response being parsed.
        self._parts: list[bytes] = []
        self.on_body: Callable[[bytes], None] = self._parts.append
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._framed = False  # a content-length or chunked body, else it ends at EOF
        self._closed_header = False
        self._interim = False
        self._head_in = False
        self._head_only = False
        self._message_done = False
        self._keep = False
        self._parser = httptools.HttpResponseParser(self)  # after on_body: the parser looks it up once

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's transports are not subclasses
        self._usable = True

    def data_received(self, data: bytes) -> None:
        self._last = self._time()
        stream = self._stream
        if stream is None:  # bytes while idle: the connection is in an unknown state
            self._lose_idle()
            return
        try:
            self._parser.feed_data(data)
        except Exception as exc:  # HttpParserError, HttpParserUpgrade, our own callbacks' errors
            if self._parts:
                self._flush(stream)
            if self._message_done:  # the response was whole; what followed it breaks the connection
                self._keep = False
                self._end_message(stream)
            else:
                self._fail(_parse_error(exc, self._head_in, self.origin), exc)
            return
        if self._parts:
            self._flush(stream)
        if self._message_done:
            self._end_message(stream)

    def eof_received(self) -> bool:
        self._usable = False
        return False  # close; connection_lost tells the stream what it meant

    def connection_lost(self, exc: Exception | None) -> None:
        self._usable = False
        self._transport_gone()
        stream = self._stream
        if stream is None:
            self._pool._unpool(self)
            return
        if self._head_in and not self._framed and exc is None:
            self._keep = False
            self._end_message(stream)  # a body delimited by the end of the connection
            return
        self._fail(_lost_error(exc, self._head_in, self._unsent, self.origin), exc)

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        if self._message_done:
            raise _UnexpectedData("data after the end of the response")

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_in:
            return  # a trailer after a chunked body: httpx has no place for it
        self._headers.append((name, value))
        lower = name.lower()
        if lower == b"content-length":
            self._framed = True
        elif lower == b"transfer-encoding":
            self._framed = value.rstrip().lower().endswith(b"chunked")
        elif lower == b"connection" and b"close" in value.lower():
            self._closed_header = True

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints, …: the real head follows
            self._interim = True
            self._headers = []
            self._reason = b""
            self._framed = self._closed_header = False
            return
        stream = self._stream
        assert stream is not None  # only a response to a request gets this far
        version = _VERSIONS.get(parser.get_http_version(), b"HTTP/1.1")
        stream.head = (status, self._headers, self._reason, version)
        self._keep = parser.should_keep_alive() and not self._closed_header and not self._head_only
        self._head_in = True
        self._unsent = False
        if self._head_only:
            self._message_done = True  # llhttp would wait for the body a HEAD response announces
        self._wake(b"")

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._message_done = True

    # -- used by the transport and the stream

    def usable(self) -> bool:
        transport = self._transport
        return self._usable and transport is not None and not transport.is_closing()

    def send(self, stream: _ResponseStream, message: bytes, timeout: float | None, head_only: bool) -> None:
        """Start a request on this connection: ``stream`` gets the response."""
        transport = self._transport
        assert transport is not None
        assert self._stream is None
        self._stream = stream
        stream.conn = self
        self._timeout = timeout
        self._headers = []
        self._reason = b""
        self._framed = self._closed_header = self._interim = self._head_in = self._message_done = False
        self._head_only = head_only
        self._last = self._time()
        transport.write(message)
        self._unsent = transport.get_write_buffer_size() > 0

    def wait(self) -> asyncio.Future[bytes]:
        """A future for the next item (or ``b""`` when the state changed), with the read timeout."""
        waiter = self._waiter = self._loop.create_future()
        self._last = self._time()
        if self._timer is None and self._timeout is not None:
            self._timer = self._loop.call_at(self._last + self._timeout, self._on_timer)
        return waiter

    def resume(self) -> None:
        self.paused = False
        if self._transport is not None:
            self._transport.resume_reading()

    def abandon(self) -> None:
        """The stream lets go before the end of its response: the connection is closed at once."""
        self._stream = None
        self._waiter = None
        self.abort()

    def abort(self) -> None:
        self._usable = False
        self._cancel_timer()
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self._usable = False
        self._cancel_timer()
        if self._transport is not None:
            self._transport.close()

    def enter_pool(self, expiry: float) -> None:
        self._expiry = self._loop.call_later(expiry, self._expire)

    def leave_pool(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    # -- internals

    def _flush(self, stream: _ResponseStream) -> None:
        """Hand over the body parts of this socket read as one item."""
        parts = self._parts
        if self._head_only:
            parts.clear()  # a HEAD response has no body, whatever its head announces
            return
        item = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(item)
                return
        stream.buffer.append(item)
        stream.buffered += len(item)
        if stream.buffered > _PAUSE_ABOVE and not self.paused and self._transport is not None:
            self.paused = True
            self._transport.pause_reading()

    def _wake(self, item: bytes) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(item)

    def _end_message(self, stream: _ResponseStream) -> None:
        """The response has ended: its stream keeps what it has; the connection is reused or closed."""
        self._stream = None
        stream.conn = None
        self._cancel_timer()
        self._wake(b"")
        if self.paused:
            self.resume()  # an idle connection must see the server close it
        if self._keep and self._usable:
            self._pool._release(self)
        else:
            self.close()

    def _fail(self, error: httpx.TransportError, cause: BaseException | None) -> None:
        stream = self._stream
        self._stream = None
        self.abort()
        if stream is not None:
            error.__cause__ = cause
            stream.conn = None
            stream.error = error
            self._wake(b"")

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        timeout = self._timeout
        if waiter is None or waiter.done() or timeout is None:
            return  # nobody is waiting; the next wait arms it again
        deadline = self._last + timeout
        if deadline - self._time() > _TIMER_SLACK:  # data came (or a new wait began) meanwhile
            self._timer = self._loop.call_at(deadline, self._on_timer)
            return
        if self._head_in:
            error = httpx.ReadTimeout("timed out waiting for the next part of the response body")
        else:
            error = httpx.ReadTimeout(f"timed out waiting for the response from {self.origin}")
        self._fail(error, None)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._expiry = None
        self._pool._unpool(self)
        self.close()

    def _lose_idle(self) -> None:
        self._pool._unpool(self)
        self.leave_pool()
        self.abort()

    def _transport_gone(self) -> None:
        self._cancel_timer()
        self.leave_pool()
        self.paused = False


class _UnexpectedData(Exception):
    """The server sent something no request asked for."""


def _request_bytes(method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The request as h11 writes it: request line, Host first, the other headers in order, body."""
    try:
        lines = [b"%b %b HTTP/1.1" % (method.encode("ascii"), target)]
    except UnicodeEncodeError:
        raise httpx.LocalProtocolError("the request method is not ASCII") from None
    if headers and headers[0][0].lower() != b"host":
        headers = sorted(headers, key=lambda header: header[0].lower() != b"host")  # stable: the rest keep order
    lines += [b"%b: %b" % header for header in headers]
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    # One line end per line and none elsewhere: no header can smuggle in another (h11 checks this too).
    line_ends = len(lines) + 1
    if head.count(b"\n") != line_ends or head.count(b"\r") != line_ends:
        raise httpx.LocalProtocolError("a request header name or value contains a line break")
    return head + body if body else head


def _origin(scheme: str, host: str, port: int) -> str:
    # No user-info, path or query: where secrets would hide.
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _lost_error(exc: BaseException | None, head_in: bool, unsent: bool, origin: str) -> httpx.TransportError:
    """The httpx exception for a connection that ended (``exc``: why, if not a clean close).

    ====================================  ==========================  ===========================
    when                                  how                         raises
    ====================================  ==========================  ===========================
    before the response head              closed, reset, broken pipe  ``RemoteProtocolError``
    before the response head              another OS error            ``WriteError`` while the
                                                                      request was unsent, else
                                                                      ``ReadError``
    in a body with a length or chunks     closed                      ``RemoteProtocolError``
    in a body                             an OS error (reset, …)      ``ReadError``
    (connecting)                          DNS failure                 ``ConnectError``, its
                                                                      ``__cause__`` the
                                                                      ``socket.gaierror``
    (connecting)                          refused, TLS failure        ``ConnectError``
    (connecting)                          the connect timeout         ``ConnectTimeout``
    (waiting for a slot)                  the pool timeout            ``PoolTimeout``
    (waiting for the head or for data)    the read timeout            ``ReadTimeout``
    (parsing)                             a malformed head            ``RemoteProtocolError``
    (parsing)                             malformed chunk framing     ``RemoteProtocolError``
    ====================================  ==========================  ===========================

    In a body, the bytes that arrived before the failure are handed over first.
    """
    reset = exc is None or isinstance(exc, ConnectionResetError | BrokenPipeError)
    if isinstance(exc, OSError) and exc.errno in _RESET_ERRNOS:
        reset = True
    if not head_in:
        if reset:
            how = "closed" if exc is None else "reset"
            return httpx.RemoteProtocolError(f"{origin} {how} the connection without sending a response")
        reason = _os_reason(exc) if isinstance(exc, OSError) else type(exc).__name__
        if unsent:
            return httpx.WriteError(f"sending the request to {origin} failed: {reason}")
        return httpx.ReadError(f"reading the response from {origin} failed: {reason}")
    if exc is None:
        # What h11 calls "peer closed connection without sending complete message body".
        return httpx.RemoteProtocolError("the response body ended early: the connection closed")
    reason = _os_reason(exc) if isinstance(exc, OSError) else type(exc).__name__
    return httpx.ReadError(f"reading the response body failed: {reason}")


def _parse_error(exc: Exception, head_in: bool, origin: str) -> httpx.TransportError:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, httptools.HttpParserUpgrade):
        return httpx.RemoteProtocolError(f"{origin} switched protocols, which nobody asked for")
    if isinstance(exc, _UnexpectedData):
        return httpx.RemoteProtocolError(f"{origin} sent {reason}")
    if not head_in:
        return httpx.RemoteProtocolError(f"{origin} sent a malformed response: {reason}")
    return httpx.RemoteProtocolError(f"the response body was malformed: {reason}")
