"""The floor for ``benchmarks/relay.py``: a raw-asyncio byte relay, an estimate of the least CPU a relay needs.

Not a product and not a contract implementation: it does the cheapest correct thing for the
fake upstream's OpenAI-style streams and the load client's checks, so that the service's cost
can be read as a multiple of it.

- Serves HTTP/1.1 with keep-alive on asyncio protocols (no streams, no framework):
  ``GET /health`` and ``POST /chat`` with a JSON body ``{"message": …, "model": …}``
  (``content-length`` bodies only).
- Per chat request, opens one upstream connection (``POST /v1/chat/completions``, the message
  and model forwarded, ``connection: close``), de-chunks the reply and, for the complete SSE
  events of each upstream socket read, copies every non-empty ``"content":"…"`` string verbatim
  (still JSON-escaped) into a ``{"delta":"…"}`` line: no JSON decoding or encoding per token.
- One client write (one HTTP chunk of NDJSON) per upstream socket read: the meta line rides
  with the first, the ``{"done":true,…}`` line (``finish_reason`` and ``usage`` copied verbatim)
  and the terminating chunk with the last.
- Bounded: the client's writes pause the upstream's reads above the transport's high-water
  mark; request heads, bodies, pipelined bytes and an unfinished SSE event have size limits.
  A client that leaves closes its upstream connection at once.

Run (the benchmark does this)::

    python -m benchmarks.floor_relay --port 8001 --upstream-port 8000   # uvloop when installed
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
from typing import Any, cast

__all__ = ("main",)

_MAX_HEAD = 16 * 1024
_MAX_BODY = 1024 * 1024
_MAX_PENDING = 64 * 1024  # bytes a client may send ahead while its response is streaming
_MAX_EVENT = 1024 * 1024  # an unfinished SSE event (or response head) from the upstream
_MAX_CHUNK_LINE = 1024

_HEAD_NDJSON = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: application/x-ndjson\r\n"
    b"cache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n"
)
_CONTENT = b'"content":"'
_FINISH = b'"finish_reason":"'
_USAGE = b'"usage":{'
_DONE_EVENT = b"data: [DONE]"
_DELTA_OPEN = b'{"delta":"'
_DELTA_CLOSE = b'"}\n'
_BACKSLASH = 0x5C


def _string_end(buf: bytes, start: int) -> int:
    """Index of the quote that ends the JSON string whose first character is at ``start``; -1 if none."""
    q = buf.find(b'"', start)
    while q > 0 and buf[q - 1] == _BACKSLASH:
        k = q - 1
        while buf[k] == _BACKSLASH:  # stops at the opening quote at worst
            k -= 1
        if (q - 1 - k) % 2 == 0:  # an even run of backslashes: the quote is not escaped
            break
        q = buf.find(b'"', q + 1)
    return q


def _object_end(buf: bytes, start: int) -> int:
    """Index just past the JSON object that opens at ``start`` (``buf[start] == "{"``); -1 if none."""
    depth = 0
    i, n = start, len(buf)
    while i < n:
        c = buf[i]
        if c == 0x22:  # "
            i = _string_end(buf, i + 1)
            if i < 0:
                return -1
        elif c == 0x7B:  # {
            depth += 1
        elif c == 0x7D:  # }
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return -1


def _error_line(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "retryable": True}}).encode() + b"\n"


class Upstream(asyncio.Protocol):
    """One chat request's upstream connection, relaying into its client's transport."""

    def __init__(self, client: Client, request: bytes, meta_line: bytes) -> None:
        self.client = client
        self.request = request
        self.meta_line = meta_line
        self.transport: asyncio.Transport | None = None
        self.gone = False  # the client left, or the relay finished: ignore everything
        self.started = False  # the client has its response head (and the meta line)
        self.head = b""  # the upstream's response head until it is complete
        self.head_done = False
        self.chunked = True
        self.rem = 0  # bytes of the current HTTP chunk's data still to come
        self.crlf = 0  # bytes of the CRLF after a chunk's data still to skip
        self.line = b""  # an unfinished chunk-size line
        self.sse = b""  # the upstream SSE after its last complete event
        self.finish = b"null"
        self.usage = b"null"

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        if self.gone:
            transport.close()
            return
        transport.write(self.request)
        if self.client.write_paused:
            transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.gone:
            return
        if not self.head_done:
            self._fail("upstream_unavailable", "the upstream closed the connection before answering")
        elif self.chunked:
            self._fail("upstream_closed", "the upstream closed the connection mid-answer")
        else:  # close-delimited or content-length SSE: the end of the body is the end of the answer
            self._end([b""], 0)

    def eof_received(self) -> bool:
        return False  # close; connection_lost decides what it meant

    def data_received(self, data: bytes) -> None:
        if self.gone:
            return
        if not self.head_done:
            data = self._read_head(data)
            if self.gone or not self.head_done:
                return
        if not self.chunked:
            self._relay(data, False)
        elif (got := self._dechunk(data)) is not None:
            self._relay(*got)

    # -- the response

    def _read_head(self, data: bytes) -> bytes:
        head = self.head + data
        i = head.find(b"\r\n\r\n")
        if i < 0:
            if len(head) > _MAX_EVENT:
                self._fail("upstream_error", "the upstream's response head is too large")
            self.head = head
            return b""
        self.head = b""
        lines = head[:i].split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            self._fail("upstream_error", "the upstream's response is not HTTP")
            return b""
        if status != 200:
            self._fail("upstream_error", f"the upstream answered HTTP {status}")
            return b""
        self.chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                self.chunked = True
        self.head_done = True
        return head[i + 4 :]

    def _dechunk(self, data: bytes) -> tuple[bytes, bool] | None:
        """The chunk data in ``data`` (state carried over between reads) and whether the body ended.

        ``None`` when the framing is broken (the stream has failed).
        """
        if self.line:
            data, self.line = self.line + data, b""
        out: list[bytes] = []
        pos, n = 0, len(data)
        rem, crlf = self.rem, self.crlf
        ended = False
        while pos < n:
            if rem:
                take = min(rem, n - pos)
                out.append(data[pos : pos + take])
                pos += take
                rem -= take
                if rem:
                    break
                crlf = 2
            if crlf:
                skip = min(crlf, n - pos)
                pos += skip
                crlf -= skip
                if crlf or pos == n:
                    break
            j = data.find(b"\r\n", pos)
            if j < 0:
                if n - pos > _MAX_CHUNK_LINE:
                    self._fail("upstream_error", "the upstream's chunk-size line is too long")
                    return None
                self.line = data[pos:]
                break
            try:
                size = int(data[pos:j].split(b";", 1)[0], 16)
            except ValueError:
                self._fail("upstream_error", "the upstream's chunked framing is broken")
                return None
            pos = j + 2
            if size == 0:  # the last chunk; trailers are ignored (the connection is closed next)
                ended = True
                break
            rem = size
        self.rem, self.crlf = rem, crlf
        return (out[0] if len(out) == 1 else b"".join(out)), ended

    def _relay(self, payload: bytes, ended: bool) -> None:
        """Turn the complete SSE events now available into one client write."""
        sse = self.sse + payload if self.sse else payload
        cut = sse.rfind(b"\n\n") + 2  # 1 when there is no complete event
        if cut == 1:
            if len(sse) > _MAX_EVENT:
                self._fail("upstream_error", "an upstream event is too large")
                return
            self.sse = sse
            if ended:
                self._end([b""], 0)
            elif not self.started:  # the head: let the client see the answer has begun
                self._write([b""], 0)
            return
        events = sse[:cut]
        self.sse = sse[cut:]
        if len(self.sse) > _MAX_EVENT:
            self._fail("upstream_error", "an upstream event is too large")
            return
        done_at = events.find(_DONE_EVENT)
        if done_at >= 0:
            events = events[:done_at]
            ended = True
        parts: list[bytes] = [b""]  # the chunk-size line goes first
        size = 0
        find = events.find
        start = find(_CONTENT)
        while start >= 0:
            start += len(_CONTENT)
            end = _string_end(events, start)
            if end < 0:
                self._fail("upstream_error", "an upstream event's content is not a JSON string")
                return
            if end > start:
                line = _DELTA_OPEN + events[start:end] + _DELTA_CLOSE
                parts.append(line)
                size += len(line)
            start = find(_CONTENT, end)
        if (f := events.rfind(_FINISH)) >= 0:
            f += len(_FINISH)
            e = _string_end(events, f)
            if e >= 0:
                self.finish = events[f - 1 : e + 1]
        if (u := events.rfind(_USAGE)) >= 0:
            u += len(_USAGE) - 1
            e = _object_end(events, u)
            if e >= 0:
                self.usage = events[u:e]
        if ended:
            self._end(parts, size)
        elif size or not self.started:
            self._write(parts, size)

    def _write(self, parts: list[bytes], size: int, tail: bytes = b"") -> None:
        """One client write of the NDJSON lines ``parts[1:]`` as one HTTP chunk, then ``tail``.

        The first write also carries the response head and the meta line.
        """
        head = b""
        if not self.started:
            self.started = True
            head = self.client.head
            parts.insert(1, self.meta_line)
            size += len(self.meta_line)
        parts[0] = head + b"%x\r\n" % size if size else head
        if size:
            parts.append(b"\r\n")
        if tail:
            parts.append(tail)
        self.client.write(b"".join(parts))

    def _end(self, parts: list[bytes], size: int) -> None:
        done = b'{"done":true,"finish_reason":%b,"usage":%b}\n' % (self.finish, self.usage)
        parts.append(done)
        self._write(parts, size + len(done), b"0\r\n\r\n")
        self._close()
        self.client.stream_finished()

    def _fail(self, code: str, message: str) -> None:
        if self.gone:
            return
        line = _error_line(code, message)
        self._write([b"", line], len(line), b"0\r\n\r\n")
        self._close()
        self.client.stream_finished()

    def _close(self) -> None:
        self.gone = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """The client left: drop the upstream connection (or the connect under way)."""
        self.gone = True
        if self.transport is not None:
            self.transport.abort()


class Client(asyncio.Protocol):
    """One client connection: HTTP/1.1 requests, one at a time, keep-alive."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.stream: Upstream | None = None
        self.connect: asyncio.Task[Any] | None = None
        self.keep_alive = True
        self.head = _HEAD_NDJSON + b"\r\n"
        self.paused = False  # reading paused: pipelined bytes beyond the limit
        self.write_paused = False  # the transport's write buffer is above its high-water mark

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.buf = b""
        if self.stream is not None:
            self.stream.abort()
            self.stream = None
        if self.connect is not None and not self.connect.done():
            self.connect.cancel()
        self.connect = None

    def eof_received(self) -> bool:
        return False  # a client that stops sending has gone (close: connection_lost follows)

    def pause_writing(self) -> None:
        self.write_paused = True
        stream = self.stream
        if stream is not None and stream.transport is not None:
            stream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        stream = self.stream
        if stream is not None and stream.transport is not None:
            stream.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.stream is None:
            self._next_request()
        elif len(self.buf) > _MAX_PENDING and self.transport is not None and not self.paused:
            self.paused = True  # pipelined requests: wait until this response is done
            self.transport.pause_reading()

    # -- requests

    def _next_request(self) -> None:
        while self.stream is None and self.transport is not None and self.buf:
            buf = self.buf
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                if len(buf) > _MAX_HEAD:
                    self._simple(431, b'{"error":"request head too large"}', close=True)
                return
            lines = buf[:i].decode("latin-1").split("\r\n")
            try:
                method, target, version = lines[0].split(" ", 2)
            except ValueError:
                self._simple(400, b'{"error":"bad request line"}', close=True)
                return
            length = 0
            connection = ""
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    try:
                        length = int(value)
                    except ValueError:
                        length = -1
                elif name == "transfer-encoding":
                    self._simple(501, b'{"error":"chunked request bodies are not supported"}', close=True)
                    return
                elif name == "connection":
                    connection = value.strip().lower()
            if not 0 <= length <= _MAX_BODY:
                self._simple(413, b'{"error":"bad or too large content-length"}', close=True)
                return
            end = i + 4 + length
            if len(buf) < end:
                return  # the rest of the body is on its way
            body = buf[i + 4 : end]
            self.buf = buf[end:]
            self.keep_alive = version == "HTTP/1.1" and connection != "close"
            path = target.split("?", 1)[0]
            if path == "/health" and method == "GET":
                self._simple(200, b'{"status":"ok"}')
            elif path == "/chat" and method == "POST":
                self._chat(body)
            else:
                self._simple(404, b'{"error":"not found"}')

    def _simple(self, status: int, body: bytes, *, close: bool = False) -> None:
        assert self.transport is not None
        close = close or not self.keep_alive
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
        self.transport.write(
            b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%b\r\n%b"
            % (status, reason.encode(), len(body), b"connection: close\r\n" if close else b"", body)
        )
        if close:
            self.buf = b""
            self.transport.close()

    def _chat(self, body: bytes) -> None:
        try:
            req = json.loads(body)
            message = req["message"]
            model = req.get("model") or "local-model"
            if not isinstance(message, str) or not isinstance(model, str):
                raise TypeError
        except (ValueError, KeyError, TypeError, AttributeError):
            self._simple(400, b'{"error":"the body must be {\\"message\\": \\"...\\", \\"model\\": \\"...\\"}"}')
            return
        relay = self.relay
        payload = json.dumps(
            {"model": model, "messages": [{"role": "user", "content": message}], "stream": True},
            separators=(",", ":"),
        ).encode()
        request = relay.request_head + b"content-length: %d\r\n\r\n%b" % (len(payload), payload)
        meta = {"meta": {"model": model, "role": "assistant", "provider": "local"}}
        meta_line = json.dumps(meta, separators=(",", ":")).encode() + b"\n"
        self.head = _HEAD_NDJSON + (b"\r\n" if self.keep_alive else b"connection: close\r\n\r\n")
        stream = self.stream = Upstream(self, request, meta_line)
        loop = asyncio.get_running_loop()
        task = self.connect = loop.create_task(loop.create_connection(lambda: stream, relay.host, relay.port))
        task.add_done_callback(lambda t: self._connected(t, stream))

    def _connected(self, task: asyncio.Task[Any], stream: Upstream) -> None:
        if self.connect is task:
            self.connect = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not stream.gone:
            stream.transport = None
            stream._fail("upstream_unavailable", f"cannot reach the upstream: {exc}")

    # -- called by Upstream

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def stream_finished(self) -> None:
        self.stream = None
        if self.transport is None:
            return
        if not self.keep_alive:
            self.transport.close()
            return
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        if self.buf:
            self._next_request()


class Relay:
    """The listening side's shared settings."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.request_head = (
            b"POST /v1/chat/completions HTTP/1.1\r\n"
            b"host: %b:%d\r\n"
            b"content-type: application/json\r\n"
            b"accept: text/event-stream\r\n"
            b"connection: close\r\n" % (host.encode(), port)
        )


async def serve(host: str, port: int, upstream_host: str, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    relay = Relay(upstream_host, upstream_port)
    server = await loop.create_server(lambda: Client(relay), host, port, backlog=2048)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"floor relay on {host}:{port} -> upstream {upstream_host}:{upstream_port}", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="A raw-asyncio NDJSON relay: the benchmark's floor estimate.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--upstream-host", default="127.0.0.1")
    p.add_argument("--upstream-port", type=int, required=True)
    p.add_argument("--no-uvloop", action="store_true", help="use the stdlib event loop")
    args = p.parse_args(argv)
    coro = serve(args.host, args.port, args.upstream_host, args.upstream_port)
    if not args.no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(coro)
            return
    asyncio.run(coro)


if __name__ == "__main__":
    main()
