"""The OpenAI-compatible provider: LM Studio, llama.cpp's server, Ollama, vLLM and the like.

``open`` sends ``POST {base_url}/chat/completions`` with ``stream: true`` and returns once the
upstream's headers are in, raising an ``AgentError`` for anything that makes the answer
impossible (so the service can still answer with an HTTP error). The returned stream turns
each upstream read into the batch of events it completes.
"""

from __future__ import annotations

import contextlib
import email.utils
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Final, Literal

import anyio
import httpx
import msgspec

from providers.base import ChatMessage, ChatParams
from providers.config import ProviderConfig, display_url
from providers.errors import (
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
    error_for_status,
)
from providers.events import ChatEvent, DeltaEvent, DoneEvent, ReasoningEvent, Usage
from providers.openai_answer import Answer, fit_message
from providers.upstream_errors import decode_json, describe_error_payload, message_of_body

__all__ = ("OpenAICompatibleProvider", "OpenAIEventStream")

_MAX_ERROR_BODY = 64 * 1024  # an error body is read to show its message, never more than this
_STALE_CONNECTION: Final = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
_DRAIN_SECONDS: Final = 0.2
_DRAIN_BYTES: Final = 64 * 1024
_TAIL_SECONDS: Final = 1.0  # after finish_reason, how long usage and [DONE] may take


class _UpstreamRequest(msgspec.Struct, omit_defaults=True):
    model: str
    messages: list[ChatMessage]
    max_tokens: int
    stream: Literal[True]  # required, not defaulted: omit_defaults would drop a default True
    temperature: float | None = None
    top_p: float | None = None


_request_encoder: Final = msgspec.json.Encoder()


class OpenAICompatibleProvider:
    """Talks to ``{base_url}/chat/completions`` over a shared ``httpx.AsyncClient``."""

    kind: Final = "openai"

    def __init__(self, name: str, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self._name = name
        self.config = config
        self._client = client
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._where = f"provider '{name}' at {display_url(config.base_url)}"
        self._secrets = (config.api_key,) if config.api_key else ()
        # Waiting for a free pool slot (all max_upstream_connections busy) is bounded like a connect.
        self._timeout = httpx.Timeout(
            config.timeout_seconds, connect=config.connect_timeout_seconds, pool=config.connect_timeout_seconds
        )
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream",
            # Compression would make the upstream hold tokens back to fill a block.
            "accept-encoding": "identity",
        }
        if config.api_key:
            headers["authorization"] = f"Bearer {config.api_key}"
        self._headers = headers

    @property
    def name(self) -> str:
        return self._name

    async def open(self, params: ChatParams) -> OpenAIEventStream:
        """Start the upstream request and wait for its headers.

        Raises:
            AgentError: the upstream is unreachable, timed out, refused, or did not answer
                with an event stream.
        """
        body = _UpstreamRequest(
            model=params.model,
            messages=params.messages,
            max_tokens=params.max_tokens,
            stream=True,
            temperature=params.temperature,
            top_p=params.top_p,
        )
        request = self._client.build_request(
            "POST",
            self._url,
            content=_request_encoder.encode(body),
            headers=self._headers,
            timeout=self._timeout,
        )
        try:
            response = await self._send(request)
        except httpx.ConnectTimeout:
            raise UpstreamTimeout(
                f"could not connect to {self._where} within {self.config.connect_timeout_seconds:g} s"
                " — is the LLM server running and reachable?"
            ) from None
        except httpx.PoolTimeout:
            raise UpstreamUnavailable(
                f"all upstream connections are busy (limits.max_upstream_connections); {self._where}"
                " cannot take another answer now — try again shortly",
                status=503,
                retry_after="1",
            ) from None
        except httpx.TimeoutException:
            raise UpstreamTimeout(f"{self._where} sent no response within {self.config.timeout_seconds:g} s") from None
        except httpx.ConnectError as exc:
            if _is_name_resolution_failure(exc):
                raise UpstreamUnavailable(
                    f"could not resolve the host of {self._where} — check providers.{self.name}.base_url"
                ) from None
            raise UpstreamUnavailable(f"could not connect to {self._where} — is the LLM server running?") from None
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(
                f"the connection to {self._where} failed ({type(exc).__name__}) — is the LLM server running?"
            ) from None
        try:
            return await self._accept(response, params)
        except BaseException:
            await response.aclose()
            raise

    async def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._client.send(request, stream=True)
        except _STALE_CONNECTION:
            # Usually a kept-alive connection the server had just closed (llama.cpp closes it right
            # after an empty answer, while saying keep-alive): no response came, so the request is
            # sent once more, on a new connection; a second failure is reported as it is.
            return await self._client.send(request, stream=True)

    async def _accept(self, response: httpx.Response, params: ChatParams) -> OpenAIEventStream:
        status = response.status_code
        content_type = response.headers.get("content-type", "").lower()
        if status >= 400:
            message = message_of_body(await self._read_limited(response)) or response.reason_phrase
            raise error_for_status(
                status,
                self._upstream_says(message, params.model, status),
                retry_after=_valid_retry_after(response.headers.get("retry-after")),
            )
        if "json" in content_type:
            return self._from_json_body(await self._read_limited(response), params)
        if content_type and "text/event-stream" not in content_type:
            raise UpstreamProtocolError(
                self._say(
                    f"{self._where} answered with {content_type.split(';')[0]!r}, not an event stream"
                    " — does base_url point at an OpenAI-compatible API (usually ending in /v1)?"
                )
            )
        return OpenAIEventStream(response, self._where, self._secrets)

    async def _read_limited(self, response: httpx.Response) -> bytes:
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

    def _say(self, text: str) -> str:
        return fit_message(text, self._secrets)

    def _upstream_says(self, message: str, model: str, status: int | None) -> str:
        if status == 404:
            return self._say(f"{self._where} does not know model {model!r} or the route (it said: {message})")
        if status is None:
            return self._say(f"{self._where} reported an error: {message}")
        return self._say(f"{self._where} answered {status}: {message}")

    def _from_json_body(self, body: bytes, params: ChatParams) -> OpenAIEventStream:
        """A JSON body under HTTP 200: an error object (LM Studio) or a non-streamed completion."""
        try:
            payload = decode_json(body)
        except ValueError:
            raise UpstreamProtocolError(f"{self._where} sent a JSON content type but not UTF-8 JSON") from None
        if isinstance(payload, dict) and payload.get("error") is not None:
            status, message = describe_error_payload(payload["error"], default_status=400)
            raise error_for_status(status, self._upstream_says(message, params.model, 404 if status == 404 else None))
        events = _events_of_completion(payload)
        if events is None:
            raise UpstreamProtocolError(f"{self._where} answered with JSON that is not a chat completion")
        return OpenAIEventStream(None, self._where, self._secrets, ready=events)


def _events_of_completion(payload: object) -> list[ChatEvent] | None:
    """Events for a server that ignored ``stream: true`` and sent the whole completion."""
    try:
        choice = payload["choices"][0]  # type: ignore[index]
        message = choice["message"]
        content = message.get("content") or ""
        reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
        finish = choice.get("finish_reason")
        usage_raw = payload.get("usage")  # type: ignore[attr-defined]
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    if not isinstance(content, str) or not isinstance(finish, str | None):
        return None
    events: list[ChatEvent] = []
    if isinstance(reasoning, str) and reasoning:
        events.append(ReasoningEvent(reasoning))
    if content:
        events.append(DeltaEvent(content))
    try:
        usage = msgspec.convert(usage_raw, Usage) if usage_raw is not None else msgspec.UNSET
    except msgspec.ValidationError:
        usage = msgspec.UNSET
    events.append(DoneEvent(done=True, finish_reason=finish, usage=usage))
    return events


class OpenAIEventStream:
    """The events of one upstream answer; see :class:`providers.base.EventStream`."""

    __slots__ = ("_ready", "_response", "_secrets", "_where")

    def __init__(
        self,
        response: httpx.Response | None,
        where: str,
        secrets: tuple[str, ...],
        *,
        ready: list[ChatEvent] | None = None,
    ) -> None:
        self._response = response
        self._where = where
        self._secrets = secrets
        self._ready = ready

    async def aclose(self) -> None:
        if self._response is not None:
            await self._response.aclose()

    def __aiter__(self) -> AsyncIterator[Sequence[ChatEvent]]:
        if self._response is None:
            return _once(self._ready or [])
        return self._relay(self._response)

    async def _relay(self, response: httpx.Response) -> AsyncIterator[Sequence[ChatEvent]]:
        answer = Answer(self._where, self._secrets)
        reads = response.aiter_raw() if "content-encoding" not in response.headers else response.aiter_bytes()
        try:
            async for chunk in reads:
                batch = answer.feed(chunk)
                if batch:
                    yield batch
                if answer.has_ended():
                    if answer.got_done_marker():
                        await _drain(reads)
                    return
                if answer.finish is not None:
                    break
            else:
                yield [answer.end_of_stream()]
                return
            # Finished: only usage and [DONE] may follow. Wait for them briefly, not for the
            # whole silence timeout, in case the upstream holds the connection open after that.
            tail: list[ChatEvent] = []
            with anyio.move_on_after(_TAIL_SECONDS), contextlib.suppress(httpx.HTTPError):
                async for chunk in reads:
                    tail += answer.feed(chunk)
                    if answer.has_ended():
                        break
            yield tail if answer.has_ended() else [*tail, answer.done()]
            if answer.got_done_marker():
                await _drain(reads)
        except httpx.ReadTimeout:
            yield [answer.silent()]
        except httpx.TransportError:
            yield [answer.broken()]
        finally:
            await response.aclose()


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
    """Read what little follows ``[DONE]`` (the end of the chunked body), briefly.

    A response read to its end goes back to the connection pool; one closed early costs the
    next request a new TCP connection. A server that keeps talking is cut off instead.
    """
    with anyio.move_on_after(_DRAIN_SECONDS), contextlib.suppress(httpx.HTTPError):
        received = 0
        async for chunk in reads:
            received += len(chunk)
            if received > _DRAIN_BYTES:
                break


async def _once(events: list[ChatEvent]) -> AsyncIterator[Sequence[ChatEvent]]:
    yield events
