"""An httpx transport that sends HTTP/1.1 through aiohttp, for cheap relaying of streamed answers.

httpx's own transport (httpcore and h11) hands a streamed body over one HTTP chunk at a time.
A real LLM server sends each SSE event as its own chunk, so one socket read carrying fifty
events becomes fifty trips through several async-generator layers. aiohttp's C parser
de-chunks everything one read brought and ``StreamReader.readany()`` returns it at once, which
measured about 4x less relay CPU. httpx stays the client API (``build_request``,
``send(stream=True)``, ``aiter_raw``, respx in tests); only the wire goes through aiohttp::

    client = httpx.AsyncClient(
        mounts={"all://127.0.0.1": AiohttpTransport(max_connections=64, max_idle_connections=8, keepalive_expiry=30)}
    )

What it keeps from httpx's transport:

* the request goes out with httpx's headers exactly (aiohttp adds only the body framing), no
  cookies, no redirects, no proxies (mount it only where no proxy applies), and the body comes
  back raw: httpx decodes any ``content-encoding`` itself;
* the per-request ``connect``, ``read`` and ``pool`` timeouts, each raising its own httpx
  exception; every failure is an ``httpx.TransportError`` whose message holds no request header;
* at most ``max_connections`` responses open at once (waiting for a slot is the pool timeout),
  idle connections reused for ``keepalive_expiry`` seconds, at most ``max_idle_connections`` kept.

What it does not do: HTTP/2; a streamed request body (it is read into memory first); a write
timeout (the small request bodies fit in the socket buffer; silence after them is the read timeout).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import math
import socket
from collections.abc import AsyncIterator
from typing import Any, Final, cast

import aiohttp
import httpx
from aiohttp.client_proto import ResponseHandler
from yarl import URL

__all__ = ("AiohttpTransport",)

# httpx already sends its own User-Agent, Accept and Accept-Encoding (or none, if the caller
# removed them): aiohttp must not add its defaults, nor a Content-Type for a bytes body.
_SKIP_AUTO_HEADERS: Final = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
# A streamed body is read into memory and sent with a length, which aiohttp writes; httpx's
# content-length for a bytes body is kept, where httpx put it.
_STREAM_FRAMING: Final = frozenset((b"content-length", b"transfer-encoding"))
_SCHEMES: Final = frozenset(("http", "https"))
# aiohttp reads a timeout of 0 as "no timeout"; httpx means "at once".
_NO_TIME: Final = 1e-9
_RESET_ERRNOS: Final = frozenset((errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE))


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` over one ``aiohttp.ClientSession``, HTTP/1.1 only.

    The session is opened on the first request, inside the running event loop, and closed by
    :meth:`aclose` (``httpx.AsyncClient.aclose`` calls it).

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
        self._max_idle = max_idle_connections
        self._keepalive_expiry = keepalive_expiry
        # Our own limit, not the connector's: aiohttp's ``connect`` timeout covers both waiting
        # for a slot and connecting, and we must tell a PoolTimeout from a ConnectTimeout.
        self._slots = asyncio.Semaphore(max_connections)
        self._session: aiohttp.ClientSession | None = None
        self._streams: set[_ResponseStream] = set()
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and return the response once its head is in; the body streams.

        Raises:
            httpx.TransportError: the specific subclass httpx's own transport would raise
                (``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``, ``ReadTimeout``,
                ``RemoteProtocolError``, …).
        """
        url = request.url
        if url.scheme not in _SCHEMES:
            raise httpx.UnsupportedProtocol(f"the aiohttp transport speaks http and https, not {url.scheme!r}")
        if self._closed:
            raise RuntimeError("the transport has been closed")
        session = self._session or self._open()
        raw_headers = request.headers.raw
        try:
            body: bytes = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
            raw_headers = [(name, value) for name, value in raw_headers if name.lower() not in _STREAM_FRAMING]
        headers = [(name.decode("utf-8", "replace"), _header_value(value)) for name, value in raw_headers]
        timeouts: dict[str, float | None] = request.extensions.get("timeout") or {}
        connect = _aiohttp_seconds(timeouts.get("connect"))
        read = _aiohttp_seconds(timeouts.get("read"))
        timeout = aiohttp.ClientTimeout(
            # ``connect`` bounds name resolution and connecting together, ``sock_connect`` each
            # address tried; never rounded up to whole seconds, as aiohttp does past 5 s.
            connect=connect,
            sock_connect=connect,
            sock_read=read,
            ceil_threshold=math.inf,
        )

        await self._acquire_slot(timeouts.get("pool"))
        try:
            try:
                response = await session.request(
                    request.method,
                    URL(str(url), encoded=True),  # httpx has quoted it already; aiohttp must not again
                    headers=headers,
                    data=body or None,
                    allow_redirects=False,
                    timeout=timeout,
                    server_hostname=_sni_hostname(request),
                )
            except (aiohttp.ClientError, OSError) as exc:
                error, cause = _request_error(exc, url)
                raise error from cause
            try:
                stream = _ResponseStream(response, self)
                result = httpx.Response(
                    response.status,
                    headers=response.raw_headers,
                    stream=stream,
                    extensions={
                        "http_version": b"HTTP/1.0" if response.version == aiohttp.HttpVersion10 else b"HTTP/1.1",
                        "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
                    },
                )
            except BaseException:
                response.close()
                raise
        except BaseException:
            self._slots.release()
            raise
        self._streams.add(stream)
        return result

    @property
    def responses_open(self) -> int:
        """Responses whose connection is still in use (not yet read to the end, or not closed)."""
        return len(self._streams)

    async def aclose(self) -> None:
        """Close every connection, idle or in use, and the session; safe if it was never used.

        Responses still open end with an ``httpx.ReadError`` on their next read.
        """
        self._closed = True
        for stream in list(self._streams):
            stream.close()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _open(self) -> aiohttp.ClientSession:
        keep_alive = self._max_idle > 0 and self._keepalive_expiry > 0
        connector = _BoundedIdleConnector(
            max_idle=self._max_idle,
            limit=0,  # the slots above are the limit
            keepalive_timeout=self._keepalive_expiry if keep_alive else None,
            force_close=not keep_alive,
            # getaddrinfo, like httpcore: a failure is a socket.gaierror, and /etc/hosts applies.
            resolver=aiohttp.ThreadedResolver(),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            timeout=aiohttp.ClientTimeout(),
            raise_for_status=False,
        )
        return self._session

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

    def _forget(self, stream: _ResponseStream) -> None:
        self._streams.discard(stream)
        self._slots.release()


class _ResponseStream(httpx.AsyncByteStream):
    """The body of one response: each item is everything aiohttp had buffered (the hot path)."""

    __slots__ = ("_closed", "_response", "_transport")

    def __init__(self, response: aiohttp.ClientResponse, transport: AiohttpTransport) -> None:
        self._response = response
        self._transport = transport
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # aiohttp's sock_read timer bounds each wait; no timeout scope of our own per read.
        content = self._response.content
        read = content.readany
        try:
            while chunk := await read():
                yield chunk
        except (aiohttp.ClientError, OSError) as exc:
            error = _body_error(exc)
            # aiohttp raises a failure before the bytes that arrived ahead of it (the last
            # tokens before a crash, say); hand those over first, as httpx's own transport does.
            if rest := _unread(content):
                yield rest
            raise error from exc

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """End the response without awaiting anything, so that a cancelled task can too.

        A body read to its end has already put its connection back in the pool (aiohttp does
        that on the last chunk); otherwise the connection is closed, which tells the upstream
        that nobody is listening any more.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self._response.close()
        finally:
            self._transport._forget(self)


class _BoundedIdleConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` that keeps at most ``max_idle`` idle connections, over :class:`_ResponseHandler`.

    aiohttp has no bound on idle connections, so this overrides ``_release``, the private method
    every released connection goes through (the same from aiohttp 3.10 to 3.14). An idle
    connection costs aiohttp nothing per request (a deque pop), unlike httpcore's pool, which
    polls each one; the bound is for the upstream, which may hold a worker per open connection.
    """

    def __init__(self, *, max_idle: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_idle = max_idle
        # Every connection this connector opens gets the protocol below (a private attribute too).
        self._factory = cast("functools.partial[ResponseHandler]", functools.partial(_ResponseHandler, loop=self._loop))

    def _release(self, key: Any, protocol: ResponseHandler, *, should_close: bool = False) -> None:
        if not should_close and self._idle_count() >= self._max_idle:
            should_close = True  # the newly idle one goes; the pool keeps what it has
        super()._release(key, protocol, should_close=should_close)

    def _idle_count(self) -> int:
        # Connections the server has closed are still listed until reuse or cleanup finds them.
        return sum(proto.is_connected() for conns in self._conns.values() for proto, _ in conns)


class _ResponseHandler(ResponseHandler):
    """aiohttp's connection protocol, made to tell the body reader when the connection fails.

    aiohttp (3.10 to 3.14 at least) leaves a body reader waiting forever, its sock_read timer
    dropped, when the chunked framing is malformed: the parser forgets the body before raising,
    the protocol records the error for a next response that never comes, and the closing
    connection then has no body to tell. Without this, ``aiter_raw()`` would hang.
    """

    def set_exception(self, exc: BaseException, exc_cause: BaseException | None = None) -> None:
        payload = self._payload
        if exc_cause is None:
            super().set_exception(exc)
        else:
            super().set_exception(exc, exc_cause)
        # A read timeout reaches the body by aiohttp's own hand, right after this.
        if payload is None or isinstance(exc, asyncio.TimeoutError) or payload.is_eof():
            return
        if payload.exception() is None:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            error = aiohttp.ClientPayloadError(f"the connection failed under the response body: {reason}")
            error.__cause__ = exc
            payload.set_exception(error)


def _unread(content: aiohttp.StreamReader) -> bytes:
    """Bytes aiohttp had buffered when the body failed (it has no public way to get them)."""
    read_nowait = getattr(content, "_read_nowait", None)
    if read_nowait is None:
        return b""
    try:
        return bytes(read_nowait(-1))
    except Exception:  # a private method of a later aiohttp may differ; the error is raised anyway
        return b""


def _aiohttp_seconds(value: float | None) -> float | None:
    if value is None:
        return None
    return value if value > 0 else _NO_TIME


def _header_value(value: bytes) -> str:
    # aiohttp writes header values as UTF-8; httpx's are ASCII unless given as bytes.
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _sni_hostname(request: httpx.Request) -> str | None:
    sni = request.extensions.get("sni_hostname")
    if isinstance(sni, bytes):
        return sni.decode("ascii")
    return sni if isinstance(sni, str) else None


def _origin(url: httpx.URL) -> str:
    # No user-info, path or query: where secrets would hide.
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"


def _request_error(exc: BaseException, url: httpx.URL) -> tuple[httpx.TransportError, BaseException]:
    """The httpx exception (and its ``__cause__``) for a failure before the response head was in."""
    where = _origin(url)
    # Order matters: aiohttp's timeouts are also connection errors, and OSErrors.
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(f"timed out connecting to {where}"), exc
    if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
        return httpx.ReadTimeout(f"timed out waiting for the response from {where}"), exc
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if _is_dns_error(exc):
            # The service tells "no such host" from "nothing listening" by this cause.
            cause = os_error if isinstance(os_error, socket.gaierror) else socket.gaierror(*os_error.args)
            return httpx.ConnectError(f"could not resolve {url.host!r}: {os_error.strerror or os_error}"), cause
        return httpx.ConnectError(f"could not connect to {where}: {os_error.strerror or os_error}"), exc
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(f"{where} closed the connection without sending a response"), exc
    if isinstance(exc, aiohttp.ClientResponseError):
        # A response aiohttp could not parse (no raise_for_status, no redirects here).
        return httpx.RemoteProtocolError(f"{where} sent a malformed response: {' '.join(exc.message.split())}"), exc
    if isinstance(exc, ConnectionResetError) or (isinstance(exc, OSError) and exc.errno in _RESET_ERRNOS):
        return httpx.RemoteProtocolError(f"{where} reset the connection without sending a response"), exc
    if isinstance(exc, aiohttp.ClientOSError | OSError):
        return httpx.WriteError(f"sending the request to {where} failed: {exc.strerror or type(exc).__name__}"), exc
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.LocalProtocolError(f"aiohttp cannot send to this URL ({type(exc).__name__})"), exc
    if isinstance(exc, aiohttp.ClientConnectionError):
        return httpx.RemoteProtocolError(f"the connection to {where} failed: {type(exc).__name__}"), exc
    return httpx.TransportError(f"the request to {where} failed: {type(exc).__name__}"), exc


def _is_dns_error(exc: aiohttp.ClientConnectorError) -> bool:
    # ClientConnectorDNSError is aiohttp 3.11+; before it, the gaierror is the os_error.
    dns_error = getattr(aiohttp, "ClientConnectorDNSError", None)
    return isinstance(exc.os_error, socket.gaierror) or (dns_error is not None and isinstance(exc, dns_error))


def _body_error(exc: BaseException) -> httpx.TransportError:
    """The httpx exception for a failure while reading the body."""
    if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
        return httpx.ReadTimeout("timed out waiting for the next part of the response body")
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        # Closed before the end of the body, or broken chunked framing: what h11 calls a
        # protocol error ("peer closed connection without sending complete message body").
        return httpx.RemoteProtocolError(f"the response body ended early or was malformed: {exc}")
    if isinstance(exc, OSError):
        return httpx.ReadError(f"reading the response body failed: {exc.strerror or type(exc).__name__}")
    return httpx.ReadError(f"reading the response body failed: {type(exc).__name__}")
