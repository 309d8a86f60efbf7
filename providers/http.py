"""Upstream HTTP plumbing that every HTTP-speaking provider kind shares.

A kind builds its request body and a :class:`StreamParser` for its wire format (SSE for the
OpenAI kind); this module sends the request (one retry on a stale kept-alive connection),
maps transport failures and HTTP statuses to the contract's errors, reads error bodies only
up to a bound, and relays the response body: one upstream read in, the batch of events it
completed out, silence and broken connections turned into the parser's terminal events, and a
short drain after a clean end so the connection goes back to the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Final, Protocol

import httpx

from providers.config import HTTPProviderConfig, display_url
from providers.errors import (
    AgentError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
    error_for_status,
    redact,
)
from providers.events import ChatEvent, Meta
from providers.upstream_errors import clip, decode_json, message_of_body

__all__ = ("HTTPEventStream", "ReadyEventStream", "StreamParser", "UpstreamHTTP", "fit_message")

_MAX_ERROR_BODY: Final = 64 * 1024  # an error body is read to show its message, never more than this
_MAX_LISTING: Final = 4 * 2**20  # a model list; hundreds of models fit in a fraction of this
_STALE_CONNECTION: Final = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
_DRAIN_SECONDS: Final = 0.2
_DRAIN_BYTES: Final = 64 * 1024
_TAIL_SECONDS: Final = 1.0
_USER_AGENT: Final = "agent-backend/0.1"  # after the finish, how long what may follow it (usage, [DONE]) may take


def fit_message(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` fit for a message: secrets masked first, then shortened to one line."""
    return clip(redact(text, secrets))


class StreamParser(Protocol):
    """One streamed answer in a kind's wire format: bytes in as they arrive, events out.

    It keeps what the end of an answer needs (finish reason, usage) and knows when the answer
    has ended; network reads, timeouts and the connection belong to :class:`HTTPEventStream`.
    """

    def feed(self, chunk: bytes) -> list[ChatEvent]:
        """The events that ``chunk`` completes; the last is terminal once :meth:`has_ended`."""
        ...

    def has_ended(self) -> bool:
        """A terminal event has been returned; nothing more will be."""
        ...

    def ended_cleanly(self) -> bool:
        """The upstream marked the end itself (``[DONE]``), so what follows is only the end of framing."""
        ...

    def finished(self) -> bool:
        """The answer is complete (a finish reason came); only trailing data (usage) may follow."""
        ...

    def done(self) -> list[ChatEvent]:
        """The last events of a finished answer (its complete tool calls), ending with ``done``."""
        ...

    def end_of_stream(self) -> list[ChatEvent]:
        """The last events when the body ended before the answer had.

        What an unfinished last line still held (where the format allows one), then the terminal event.
        """
        ...

    def broken(self) -> list[ChatEvent]:
        """The last events when the connection failed mid-body (``done`` if the answer had finished)."""
        ...

    def silent(self) -> list[ChatEvent]:
        """The last events when the upstream went silent for longer than allowed."""
        ...


class UpstreamHTTP:
    """One provider's way to its server: headers, timeouts, error mapping, over the shared client.

    ``slow_hint`` is what a kind adds to the message when its server sent no response in time
    (Ollama: the model may still be loading).
    """

    __slots__ = (
        "_client",
        "_extensions",
        "_get_headers",
        "_headers",
        "_slow_hint",
        "config",
        "name",
        "secrets",
        "timeout",
        "where",
    )

    def __init__(
        self, name: str, config: HTTPProviderConfig, client: httpx.AsyncClient, *, slow_hint: str = ""
    ) -> None:
        self.name = name
        self.config = config
        self._client = client
        self.where = f"provider '{name}' at {display_url(config.base_url)}"
        self.secrets = config.secrets
        # Waiting for a free pool slot (all max_upstream_connections busy) is bounded like a connect.
        self.timeout = httpx.Timeout(
            config.timeout_seconds, connect=config.connect_timeout_seconds, pool=config.connect_timeout_seconds
        )
        headers = {
            "user-agent": _USER_AGENT,
            "content-type": "application/json",
            # Compression would make the upstream hold tokens back to fill a block.
            "accept-encoding": "identity",
            **{name.lower(): value for name, value in config.extra_headers.items()},
        }
        if config.api_key:
            headers["authorization"] = f"Bearer {config.api_key}"
        self._headers = headers
        self._get_headers = {**{k: v for k, v in headers.items() if k != "content-type"}, "accept": "application/json"}
        self._slow_hint = slow_hint
        self._extensions = {"timeout": self.timeout.as_dict()}

    def say(self, text: str) -> str:
        """``text`` as a message: secrets masked, one line, bounded."""
        return fit_message(text, self.secrets)

    async def post(self, url: httpx.URL, body: bytes, *, accept: str) -> httpx.Response:
        """Send ``body`` and return once the response headers are in (its body still streams).

        The request is built whole here (headers, timeouts) rather than by ``client.build_request``,
        which parses the URL and merges header sets anew on every call.

        Raises:
            AgentError: the upstream cannot be reached, timed out, or no connection is free.
        """
        request = httpx.Request(
            "POST", url, headers={**self._headers, "accept": accept}, content=body, extensions=self._extensions
        )
        return await self._send(request)

    async def get_json(self, url: str, *, within: float) -> object:
        """``GET url`` (a listing) with the provider's headers; the whole exchange is cut off after ``within`` seconds.

        Raises:
            AgentError: as :meth:`post`; the upstream's own error for a status of 400 or more;
                ``upstream_timeout`` when the cut-off passes; ``upstream_protocol_error`` for a
                body that is not JSON or is larger than a listing can be.
        """
        path = httpx.URL(url).path
        request = self._client.build_request("GET", url, headers=self._get_headers, timeout=self.timeout)
        try:
            async with asyncio.timeout(within):
                response = await self._send(request)
                try:
                    if response.status_code >= 400:
                        status = response.status_code
                        message = message_of_body(await self.read_limited(response)) or response.reason_phrase
                        raise error_for_status(
                            status,
                            self.say(f"{self.where} answered {status} to GET {path}: {message}"),
                            retry_after=_valid_retry_after(response.headers.get("retry-after")),
                        )
                    body = await self._read_listing(response, path)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise UpstreamTimeout(f"{self.where} did not answer GET {path} within {within:g} s") from None
        try:
            return decode_json(body)
        except ValueError:
            raise UpstreamProtocolError(f"{self.where} answered GET {path} with a body that is not JSON") from None

    async def _read_listing(self, response: httpx.Response, path: str) -> bytes:
        body = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > _MAX_LISTING:
                    raise UpstreamProtocolError(
                        f"{self.where} answered GET {path} with more than {_MAX_LISTING // 2**20} MiB; not a model list"
                    )
        except httpx.TimeoutException:
            raise UpstreamTimeout(
                f"{self.where} went silent for more than {self.config.timeout_seconds:g} s answering GET {path}"
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(
                self.say(f"{self.where} broke off its answer to GET {path} ({type(exc).__name__})")
            ) from None
        return bytes(body)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            try:
                return await self._client.send(request, stream=True)
            except _STALE_CONNECTION:
                # Usually a kept-alive connection the server had just closed (llama.cpp closes it right
                # after an empty answer, while saying keep-alive): no response came, so the request is
                # sent once more, on a new connection; a second failure is reported as it is.
                return await self._client.send(request, stream=True)
        except httpx.ConnectTimeout:
            raise UpstreamTimeout(
                f"could not connect to {self.where} within {self.config.connect_timeout_seconds:g} s"
                " — is the LLM server running and reachable?"
            ) from None
        except httpx.PoolTimeout:
            raise UpstreamUnavailable(
                f"all upstream connections are busy (limits.max_upstream_connections); {self.where}"
                " cannot take another answer now — try again shortly",
                status=503,
                retry_after="1",
            ) from None
        except httpx.TimeoutException:
            raise UpstreamTimeout(
                f"{self.where} sent no response within {self.config.timeout_seconds:g} s{self._slow_hint}"
            ) from None
        except httpx.ConnectError as exc:
            if _is_name_resolution_failure(exc):
                raise UpstreamUnavailable(
                    f"could not resolve the host of {self.where} — check providers.{self.name}.base_url"
                ) from None
            raise UpstreamUnavailable(f"could not connect to {self.where} — is the LLM server running?") from None
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(
                f"the connection to {self.where} failed ({type(exc).__name__}) — is the LLM server running?"
            ) from None

    async def read_limited(self, response: httpx.Response) -> bytes:
        """The start of a body that is only read for its message; closes the response."""
        body = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= _MAX_ERROR_BODY:
                    break
        except httpx.HTTPError:
            pass  # the status already tells what happened; a partial message is still useful
        finally:
            await response.aclose()
        return bytes(body[:_MAX_ERROR_BODY])

    async def status_error(self, response: httpx.Response, model: str) -> AgentError:
        """The error an HTTP error status (>= 400) stands for, with the upstream's own message."""
        status = response.status_code
        message = message_of_body(await self.read_limited(response)) or response.reason_phrase
        return error_for_status(
            status,
            self.upstream_says(message, model, status),
            retry_after=_valid_retry_after(response.headers.get("retry-after")),
        )

    def upstream_says(self, message: str, model: str, status: int | None) -> str:
        """What to tell the user about an upstream's error message."""
        if status == 404:
            return self.say(f"{self.where} does not know model {model!r} or the route (it said: {message})")
        if status is None:
            return self.say(f"{self.where} reported an error: {message}")
        return self.say(f"{self.where} answered {status}: {message}")


class HTTPEventStream:
    """The events of one streamed upstream answer; see :class:`providers.base.EventStream`."""

    __slots__ = ("_closed", "_iterator", "_parser", "_response", "meta")

    def __init__(self, meta: Meta, response: httpx.Response, parser: StreamParser) -> None:
        self.meta = meta
        self._response = response
        self._parser = parser
        self._iterator: AsyncIterator[Sequence[ChatEvent]] | None = None
        self._closed = False

    def __aiter__(self) -> AsyncIterator[Sequence[ChatEvent]]:
        if self._iterator is None:
            self._iterator = _relay(self._response, self._parser)
        return self._iterator

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        iterator = self._iterator
        try:
            if iterator is not None:
                if self._parser.has_ended():
                    # Past the terminal event the relay only drains the end of the body (briefly),
                    # so the connection goes back to the pool instead of being dropped.
                    async for _ in iterator:
                        pass
                await iterator.aclose()  # type: ignore[attr-defined]
        finally:
            # Closing mid-body drops the connection: that is how the LLM server learns to stop.
            await self._response.aclose()


class ReadyEventStream:
    """An answer that arrived whole (a server that ignored ``stream: true``)."""

    __slots__ = ("_events", "meta")

    def __init__(self, meta: Meta, events: list[ChatEvent]) -> None:
        self.meta = meta
        self._events = events

    def __aiter__(self) -> AsyncIterator[Sequence[ChatEvent]]:
        return _once(self._events)

    async def aclose(self) -> None:
        return None


async def _relay(response: httpx.Response, parser: StreamParser) -> AsyncIterator[Sequence[ChatEvent]]:
    # The stream itself, not aiter_raw(): one generator layer (and httpx's byte counting) less per read.
    reads: AsyncIterator[bytes] = (
        aiter(response.stream)  # type: ignore[arg-type]
        if "content-encoding" not in response.headers
        else response.aiter_bytes()
    )
    try:
        async for chunk in reads:
            batch = parser.feed(chunk)
            if batch:
                yield batch
            if parser.has_ended():
                if parser.ended_cleanly():
                    await _drain(reads)
                return
            if parser.finished():
                break
        else:
            yield parser.end_of_stream()
            return
        # Finished: only usage and an end marker may follow. Wait for them briefly, not for the
        # whole silence timeout, in case the upstream holds the connection open after that.
        tail: list[ChatEvent] = []
        with contextlib.suppress(TimeoutError, httpx.HTTPError):
            async with asyncio.timeout(_TAIL_SECONDS):
                async for chunk in reads:
                    tail += parser.feed(chunk)
                    if parser.has_ended():
                        break
        yield tail if parser.has_ended() else [*tail, *parser.done()]
        if parser.ended_cleanly():
            await _drain(reads)
    except httpx.ReadTimeout:
        yield parser.silent()
    except httpx.TransportError:
        yield parser.broken()


def _valid_retry_after(value: str | None) -> str | None:
    """The upstream's ``Retry-After`` if it is one (seconds or an HTTP date), else ``None``."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return value
    try:
        email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return value


def _is_name_resolution_failure(exc: httpx.ConnectError) -> bool:
    return isinstance(exc.__cause__, socket.gaierror) or "name or service not known" in str(exc).lower()


async def _drain(reads: AsyncIterator[bytes]) -> None:
    """Read what little follows the end marker (the end of the chunked body), briefly.

    A response read to its end goes back to the connection pool; one closed early costs the
    next request a new TCP connection. A server that keeps talking is cut off instead.
    """
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(_DRAIN_SECONDS):
            received = 0
            async for chunk in reads:
                received += len(chunk)
                if received > _DRAIN_BYTES:
                    break


async def _once(events: list[ChatEvent]) -> AsyncIterator[Sequence[ChatEvent]]:
    yield events
