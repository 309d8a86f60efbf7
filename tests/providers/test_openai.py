"""The OpenAI-compatible provider against respx-mocked upstreams: every contract case."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import httpx
import msgspec
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from providers import (
    AgentError,
    ChatEvent,
    ChatMessage,
    ChatParams,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    ModelNotFound,
    OpenAIAnswer,
    OpenAICompatibleProvider,
    OpenAIConfig,
    PromptSize,
    RateLimited,
    ReasoningEvent,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
    Usage,
)

BASE = "http://upstream.test/v1"
SECRET = "sk-test-secret-0123456789"
SSE = {"content-type": "text/event-stream"}


def chunk(content: str | None = None, *, finish: str | None = None, **delta: Any) -> bytes:
    if content is not None:
        delta["content"] = content
    body = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


ROLE = chunk(role="assistant")
DONE = b"data: [DONE]\n\n"


def params(**overrides: Any) -> ChatParams:
    values: dict[str, Any] = {
        "model": "m",
        "messages": [ChatMessage("user", "hi")],
        "max_tokens": 16,
    }
    values.update(overrides)
    return ChatParams(**values)


def sse_reply(chunks: Iterable[bytes], status: int = 200, headers: dict[str, str] | None = None) -> Any:
    parts = list(chunks)

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    return lambda request: httpx.Response(status, headers=headers or SSE, content=body())


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


@pytest.fixture
def provider(client: httpx.AsyncClient) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider("local", OpenAIConfig(base_url=BASE, api_key=SECRET), client)


async def collect(provider: OpenAICompatibleProvider, p: ChatParams | None = None) -> list[list[ChatEvent]]:
    stream = await provider.open(p or params())
    try:
        return [list(batch) async for batch in stream]
    finally:
        await stream.aclose()


def flat(batches: Sequence[Sequence[ChatEvent]]) -> list[ChatEvent]:
    return [event for batch in batches for event in batch]


def only_error(events: list[ChatEvent]) -> ErrorEvent:
    terminal = events[-1]
    assert isinstance(terminal, ErrorEvent), events
    assert not any(isinstance(e, DoneEvent | ErrorEvent) for e in events[:-1])
    return terminal


# --- a normal answer --------------------------------------------------------------------


@respx.mock
async def test_deltas_then_done_with_usage(provider: OpenAICompatibleProvider) -> None:
    usage_chunk = b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}\n\n'
    respx.post(f"{BASE}/chat/completions").mock(
        side_effect=sse_reply([ROLE, chunk("Hi"), chunk(" there"), chunk(finish="stop"), usage_chunk, DONE])
    )
    events = flat(await collect(provider))
    assert events == [
        DeltaEvent("Hi"),
        DeltaEvent(" there"),
        DoneEvent(done=True, finish_reason="stop", usage=Usage(9, 2, 11)),
    ]


@respx.mock
async def test_request_carries_only_chat_parameters_and_bearer_key(
    provider: OpenAICompatibleProvider,
) -> None:
    route = respx.post(f"{BASE}/chat/completions").mock(side_effect=sse_reply([chunk("x", finish="stop"), DONE]))
    await collect(provider, params(temperature=0.5, top_p=0.9, messages=[ChatMessage("system", "s")]))
    request = route.calls.last.request
    assert json.loads(request.content) == {
        "model": "m",
        "messages": [{"role": "system", "content": "s"}],
        "max_tokens": 16,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.5,
        "top_p": 0.9,
    }
    assert request.headers["authorization"] == f"Bearer {SECRET}"


@respx.mock
async def test_no_authorization_header_without_api_key(client: httpx.AsyncClient) -> None:
    route = respx.post(f"{BASE}/chat/completions").mock(side_effect=sse_reply([chunk("x", finish="stop"), DONE]))
    keyless = OpenAICompatibleProvider("local", OpenAIConfig(base_url=BASE), client)
    await collect(keyless)
    assert "authorization" not in route.calls.last.request.headers
    assert "temperature" not in json.loads(route.calls.last.request.content)


@respx.mock
async def test_reasoning_content_and_reasoning_fields(provider: OpenAICompatibleProvider) -> None:
    respx.post(f"{BASE}/chat/completions").mock(
        side_effect=sse_reply(
            [
                chunk(reasoning_content="think "),
                chunk(reasoning="more"),
                chunk("answer", finish="stop"),
                DONE,
            ]
        )
    )
    assert flat(await collect(provider)) == [
        ReasoningEvent("think "),
        ReasoningEvent("more"),
        DeltaEvent("answer"),
        DoneEvent(done=True, finish_reason="stop"),
    ]


@respx.mock
async def test_null_empty_and_extra_fields_are_normal(provider: OpenAICompatibleProvider) -> None:
    odd = (
        b'data: {"choices":[{"delta":{"content":null},"finish_reason":null}],"obfuscation":"x",'
        b'"timings":{"predicted_ms":1.5},"prompt_progress":{"total":3}}\n\n'
    )
    respx.post(f"{BASE}/chat/completions").mock(
        side_effect=sse_reply(
            [ROLE, odd, chunk(""), chunk("ok"), b'data: {"choices":[]}\n\n', chunk(finish="stop"), DONE]
        )
    )
    assert flat(await collect(provider)) == [DeltaEvent("ok"), DoneEvent(done=True, finish_reason="stop")]


@respx.mock
async def test_one_batch_per_upstream_read(provider: OpenAICompatibleProvider) -> None:
    respx.post(f"{BASE}/chat/completions").mock(
        side_effect=sse_reply([ROLE + chunk("a") + chunk("b"), chunk("c"), chunk(finish="stop") + DONE])
    )
    batches = await collect(provider)
    assert batches == [
        [DeltaEvent("a"), DeltaEvent("b")],
        [DeltaEvent("c")],
        [DoneEvent(done=True, finish_reason="stop")],
    ]


@respx.mock
async def test_split_at_every_byte_gives_the_same_events(provider: OpenAICompatibleProvider) -> None:
    stream = ROLE + chunk("héllo 🙂") + chunk(" wörld", finish="stop") + DONE
    route = respx.post(f"{BASE}/chat/completions")
    expected = [DeltaEvent("héllo 🙂"), DeltaEvent(" wörld"), DoneEvent(done=True, finish_reason="stop")]
    for cut in range(1, len(stream)):
        route.mock(side_effect=sse_reply([stream[:cut], stream[cut:]]))
        assert flat(await collect(provider)) == expected, cut


@pytest.mark.parametrize("reason", ["stop", "length", "tool_calls", "content_filter", "something_new"])
@respx.mock
async def test_finish_reasons_end_in_done(provider: OpenAICompatibleProvider, reason: str) -> None:
    respx.post(f"{BASE}/chat/completions").mock(side_effect=sse_reply([chunk("x"), chunk(finish=reason), DONE]))
    assert flat(await collect(provider))[-1] == DoneEvent(done=True, finish_reason=reason)


@respx.mock
async def test_finish_reason_without_done_marker_still_finishes(provider: OpenAICompatibleProvider) -> None:
    respx.post(f"{BASE}/chat/completions").mock(side_effect=sse_reply([chunk("x"), chunk(finish="length")]))
    assert flat(await collect(provider)) == [DeltaEvent("x"), DoneEvent(done=True, finish_reason="length")]


@respx.mock
async def test_done_marker_without_finish_reason(provider: OpenAICompatibleProvider) -> None:
    respx.post(f"{BASE}/chat/completions").mock(side_effect=sse_reply([chunk("x"), DONE, chunk("ignored")]))
    assert flat(await collect(provider)) == [DeltaEvent("x"), DoneEvent(done=True, finish_reason=None)]


@respx.mock
async def test_pings_are_ignored(provider: OpenAICompatibleProvider) -> None:
    respx.post(f"{BASE}/chat/completions").mock(
        side_effect=sse_reply(
            [b": ping\n\n", b"event: ping\n\n", b"event: ping\ndata: {}\n\n", chunk("x", finish="stop"), DONE]
        )
    )
    assert flat(await collect(provider)) == [DeltaEvent("x"), DoneEvent(done=True, finish_reason="stop")]


@respx.mock
async def test_non_streamed_completion_json_becomes_events(provider: OpenAICompatibleProvider) -> None:
    completion = {
        "choices": [{"message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }
    respx.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(200, json=completion))
    assert flat(await collect(provider)) == [
        DeltaEvent("whole"),
        DoneEvent(done=True, finish_reason="stop", usage=Usage(1, 1)),
    ]


# --- failures after the stream started: one error line, nothing after it -----------------


@pytest.mark.parametrize(
    ("line", "code", "fragment"),
    [
        (
            b'data: {"error": {"message": "context full", "code": 400}}\n\n',
            "upstream_rejected",
            "context full",
        ),
        (b'data: {"error": {"message": "boom", "type": "server_error"}}\n\n', "upstream_unavailable", "boom"),
        (b'data: {"error": "plain text failure"}\n\n', "upstream_unavailable", "plain text failure"),
        (b'event: error\ndata: {"message": "overloaded_error"}\n\n', "upstream_unavailable", "overloaded"),
        (b"event: error\ndata: text payload\n\n", "upstream_unavailable", "text payload"),
    ],
    ids=["object-400", "object-server", "string", "event-json", "event-text"],
)
@respx.mock
async def test_error_in_stream_is_one_error_line(
    provider: OpenAICompatibleProvider, line: bytes, code: str, fragment: str
) -> None:
    respx.post(f"{BASE}/chat/completions").mock(side_effect=sse_reply([ROLE, chunk("partial"), line, DONE]))
    events = flat(await collect(provider))
    assert events[0] == DeltaEvent("partial")
    error = only_error(events)
    assert error.error.code == code
    assert fragment in error.error.message
    assert len(events) == 2


@respx.mock
async def test_echoed_secret_is_redacted(provider: OpenAICompatibleProvider) -> None:
    line = b'data: {"error": {"message": "bad key ' + SECRET.encode() + b'", "code": 401}}\n\n'
    respx.post(f"{BASE}/chat/completions").mock(side_effect=sse_reply([line]))
    error = only_error(flat(await collect(provider)))
    assert SECRET not in error.error.message
    assert "bad key ***" in error.error.message


@pytest.mark.parametrize("reason", ["error", "abort"])
@respx.mock
async def test_failed_finish_reason_is_a_retryable_error(provider: OpenAICompatibleProvider, reason: str) -> None:
    respx.post(f"{BASE}/chat/completions").mock(side_effect=sse_reply([chunk("x"), chunk(finish=reason), DONE]))
    error = only_error(flat(await collect(provider)))
    assert error.error.code == "upstream_unavailable"
    assert error.error.retryable is True


@pytest.mark.parametrize(
    "chunks",
    [[], [ROLE, chunk("half")], [b'data: {"choices": []}\n']],
    ids=["empty", "no-finish", "unterminated"],
)
@respx.mock
async def test_stream_ending_without_finish_is_interrupted(
    provider: OpenAICompatibleProvider, chunks: list[bytes]
) -> None:
    respx.post(f"{BASE}/chat/completions").mock(side_effect=sse_reply(chunks))
    error = only_error(flat(await collect(provider)))
    assert error.error.code == "stream_interrupted"
    assert error.error.retryable is True


@respx.mock
async def test_bad_json_in_data_line_is_protocol_error(provider: OpenAICompatibleProvider) -> None:
    respx.post(f"{BASE}/chat/completions").mock(side_effect=sse_reply([chunk("ok"), b"data: {not json\n\n", DONE]))
    error = only_error(flat(await collect(provider)))
    assert error.error.code == "upstream_protocol_error"
    assert error.error.retryable is False


def _raising_reply(exc: Exception) -> Any:
    async def body() -> AsyncIterator[bytes]:
        yield chunk("partial")
        raise exc

    return lambda request: httpx.Response(200, headers=SSE, content=body())


@respx.mock
async def test_connection_drop_mid_stream_is_interrupted(provider: OpenAICompatibleProvider) -> None:
    respx.post(f"{BASE}/chat/completions").mock(side_effect=_raising_reply(httpx.RemoteProtocolError("peer closed")))
    events = flat(await collect(provider))
    assert events[0] == DeltaEvent("partial")
    assert only_error(events).error.code == "stream_interrupted"


@respx.mock
async def test_silence_mid_stream_is_timeout(provider: OpenAICompatibleProvider) -> None:
    respx.post(f"{BASE}/chat/completions").mock(side_effect=_raising_reply(httpx.ReadTimeout("silent")))
    error = only_error(flat(await collect(provider)))
    assert error.error.code == "upstream_timeout"
    assert error.error.retryable is True


# --- failures before the stream starts: raised, so the service answers with an HTTP error --


@pytest.mark.parametrize(
    ("exc", "kind", "status"),
    [
        (httpx.ConnectError("refused"), UpstreamUnavailable, 502),
        (httpx.ConnectTimeout("slow"), UpstreamTimeout, 504),
        (httpx.ReadTimeout("no headers"), UpstreamTimeout, 504),
        (httpx.RemoteProtocolError("reset"), UpstreamUnavailable, 502),
    ],
)
@respx.mock
async def test_transport_failures_before_headers(
    provider: OpenAICompatibleProvider, exc: Exception, kind: type[AgentError], status: int
) -> None:
    respx.post(f"{BASE}/chat/completions").mock(side_effect=exc)
    with pytest.raises(kind) as caught:
        await provider.open(params())
    assert caught.value.status == status
    assert "provider 'local' at http://upstream.test/v1" in caught.value.message


@respx.mock
async def test_stale_connection_is_retried_once(provider: OpenAICompatibleProvider) -> None:
    route = respx.post(f"{BASE}/chat/completions")
    route.side_effect = [httpx.RemoteProtocolError("closed"), sse_reply([chunk("ok", finish="stop"), DONE])(None)]
    assert flat(await collect(provider)) == [DeltaEvent("ok"), DoneEvent(done=True, finish_reason="stop")]
    assert route.call_count == 2


@respx.mock
async def test_connect_error_message_says_what_to_do(provider: OpenAICompatibleProvider) -> None:
    respx.post(f"{BASE}/chat/completions").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(UpstreamUnavailable) as caught:
        await provider.open(params())
    assert caught.value.message == (
        "could not connect to provider 'local' at http://upstream.test/v1 — is the LLM server running?"
    )


@pytest.mark.parametrize(
    ("status", "body", "kind", "our_status", "retryable"),
    [
        (404, {"error": {"message": "model 'm' not found"}}, ModelNotFound, 404, False),
        (429, {"error": {"message": "slow down"}}, RateLimited, 429, True),
        (500, {"error": {"message": "crashed"}}, UpstreamUnavailable, 502, True),
        (503, {"error": {"message": "loading model"}}, UpstreamUnavailable, 503, True),
        (
            400,
            {"error": {"message": "context length exceeded", "type": "invalid_request_error"}},
            UpstreamRejected,
            400,
            False,
        ),
        (401, {"error": {"message": "invalid api key"}}, UpstreamRejected, 400, False),
        (422, {"detail": [{"msg": "field required"}]}, UpstreamRejected, 400, False),
    ],
)
@respx.mock
async def test_upstream_status_codes(
    provider: OpenAICompatibleProvider,
    status: int,
    body: dict[str, Any],
    kind: type[AgentError],
    our_status: int,
    retryable: bool,
) -> None:
    respx.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(status, json=body))
    with pytest.raises(kind) as caught:
        await provider.open(params())
    assert caught.value.status == our_status
    assert caught.value.retryable is retryable
    inner = body.get("error", body)
    expected = inner.get("message", "field required")
    assert expected in caught.value.message


@respx.mock
async def test_rate_limit_passes_retry_after(provider: OpenAICompatibleProvider) -> None:
    respx.post(f"{BASE}/chat/completions").mock(
        return_value=httpx.Response(429, headers={"retry-after": "7"}, json={"error": "busy"})
    )
    with pytest.raises(RateLimited) as caught:
        await provider.open(params())
    assert caught.value.retry_after == "7"


@respx.mock
async def test_error_body_never_echoes_the_key(provider: OpenAICompatibleProvider) -> None:
    respx.post(f"{BASE}/chat/completions").mock(
        return_value=httpx.Response(401, text=f"Incorrect API key provided: {SECRET}")
    )
    with pytest.raises(UpstreamRejected) as caught:
        await provider.open(params())
    assert SECRET not in caught.value.message
    assert "Incorrect API key provided: ***" in caught.value.message


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({"error": "Unexpected endpoint or method. (POST /v1/chat/completions)"}, ModelNotFound),
        ({"error": {"message": "Model 'x' not found", "code": "model_not_found"}}, ModelNotFound),
        ({"error": {"message": "prompt too long", "type": "invalid_request_error"}}, UpstreamRejected),
    ],
)
@respx.mock
async def test_json_error_body_under_200_is_an_http_error(
    provider: OpenAICompatibleProvider, body: dict[str, Any], kind: type[AgentError]
) -> None:
    respx.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(200, json=body))
    with pytest.raises(kind):
        await provider.open(params())


@pytest.mark.parametrize(
    ("headers", "content"),
    [({"content-type": "text/html"}, b"<html>hi</html>"), ({"content-type": "application/json"}, b"{oops")],
)
@respx.mock
async def test_not_an_event_stream_is_protocol_error(
    provider: OpenAICompatibleProvider, headers: dict[str, str], content: bytes
) -> None:
    respx.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(200, headers=headers, content=content))
    with pytest.raises(UpstreamProtocolError) as caught:
        await provider.open(params())
    assert caught.value.status == 502


def test_usage_omitted_from_done_when_not_reported() -> None:
    line = msgspec.json.encode(DoneEvent(done=True, finish_reason="stop"))
    assert line == b'{"done":true,"finish_reason":"stop"}'


_sse_fragments = st.sampled_from(
    [
        ROLE,
        chunk("a"),
        chunk("é🙂"),
        chunk(finish="stop"),
        chunk(finish="abort"),
        chunk(reasoning_content="r"),
        DONE,
        b": ping\n\n",
        b"event: error\ndata: x\n\n",
        b'data: {"error": "e"}\n\n',
        b'data: {"choices": "nope"}\n\n',
        b"data: {broken\n\n",
        b"\r\n",
        b"data: ",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.lists(st.one_of(_sse_fragments, st.binary(max_size=30)), max_size=12), data=st.data())
async def test_any_upstream_body_ends_in_exactly_one_terminal_event(
    provider: OpenAICompatibleProvider, body: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(body)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    with respx.mock:
        respx.post(f"{BASE}/chat/completions").mock(side_effect=sse_reply(pieces))
        events = flat(await collect(provider))
    terminals = [e for e in events if isinstance(e, DoneEvent | ErrorEvent)]
    assert terminals == [events[-1]]
    assert all(e.delta for e in events if isinstance(e, DeltaEvent))


# --- found in review: secrets cut by shortening, non-UTF-8 upstream bytes, odd events ------


@pytest.mark.parametrize("padding", [1900, 1960, 1975, 1990, 2100])
@respx.mock
async def test_secret_near_the_length_limit_is_still_masked(provider: OpenAICompatibleProvider, padding: int) -> None:
    message = "x" * padding + SECRET
    respx.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(400, json={"error": {"message": message}}))
    with pytest.raises(UpstreamRejected) as caught:
        await provider.open(params())
    assert SECRET[:10] not in caught.value.message
    respx.post(f"{BASE}/chat/completions").mock(
        side_effect=sse_reply([b'data: {"error": {"message": "' + message.encode() + b'"}}\n\n'])
    )
    assert SECRET[:10] not in only_error(flat(await collect(provider))).error.message


@pytest.mark.parametrize("echo", [SECRET.upper(), SECRET[:12] + "...", f"key={SECRET[:20]}…"])
@respx.mock
async def test_altered_echoes_of_the_secret_are_masked(provider: OpenAICompatibleProvider, echo: str) -> None:
    respx.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(401, text=f"bad key {echo}"))
    with pytest.raises(UpstreamRejected) as caught:
        await provider.open(params())
    assert SECRET[:8].lower() not in caught.value.message.lower()


@pytest.mark.parametrize(
    "line",
    [
        b'data: {"choices":[{"index":0,"delta":{"content":"a\xff\xfeb"}}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"reasoning_content":"caf\xe9"}}]}\n\n',
    ],
)
@respx.mock
async def test_non_utf8_chunk_is_protocol_error(provider: OpenAICompatibleProvider, line: bytes) -> None:
    respx.post(f"{BASE}/chat/completions").mock(side_effect=sse_reply([chunk("ok"), line, DONE]))
    events = flat(await collect(provider))
    assert events[0] == DeltaEvent("ok")
    assert only_error(events).error.code == "upstream_protocol_error"


@respx.mock
async def test_non_utf8_error_object_keeps_its_meaning(provider: OpenAICompatibleProvider) -> None:
    respx.post(f"{BASE}/chat/completions").mock(side_effect=sse_reply([b'data: {"error": "oops \xff", "code": 1}\n\n']))
    error = only_error(flat(await collect(provider)))
    assert error.error.code == "upstream_unavailable"
    assert "oops" in error.error.message


@pytest.mark.parametrize(
    ("status", "kind"),
    [(200, UpstreamProtocolError), (404, ModelNotFound), (429, RateLimited), (500, UpstreamUnavailable)],
)
@respx.mock
async def test_non_utf8_json_body_keeps_the_status_meaning(
    provider: OpenAICompatibleProvider, status: int, kind: type[AgentError]
) -> None:
    respx.post(f"{BASE}/chat/completions").mock(
        return_value=httpx.Response(
            status, headers={"content-type": "application/json"}, content=b'{"error":{"message":"h\xffi"}}'
        )
    )
    with pytest.raises(kind):
        await provider.open(params())


@respx.mock
async def test_error_event_carrying_done_marker_is_an_error(provider: OpenAICompatibleProvider) -> None:
    respx.post(f"{BASE}/chat/completions").mock(side_effect=sse_reply([b"event: error\ndata: [DONE]\n\n"]))
    assert only_error(flat(await collect(provider))).error.code == "upstream_unavailable"


@respx.mock
async def test_empty_data_events_are_skipped(provider: OpenAICompatibleProvider) -> None:
    respx.post(f"{BASE}/chat/completions").mock(
        side_effect=sse_reply([b"data:\n\n", b"data\n\n", chunk("x", finish="stop"), DONE])
    )
    assert flat(await collect(provider)) == [DeltaEvent("x"), DoneEvent(done=True, finish_reason="stop")]


@pytest.mark.parametrize(("given", "sent"), [("soon", "1"), ("12", "12"), ("Wed, 21 Oct 2026 07:28:00 GMT", None)])
@respx.mock
async def test_retry_after_is_passed_on_only_when_valid(
    provider: OpenAICompatibleProvider, given: str, sent: str | None
) -> None:
    respx.post(f"{BASE}/chat/completions").mock(
        return_value=httpx.Response(429, headers={"retry-after": given}, json={"error": "busy"})
    )
    with pytest.raises(RateLimited) as caught:
        await provider.open(params())
    assert caught.value.retry_after == (sent or given)


@respx.mock
async def test_unresolvable_host_says_so(client: httpx.AsyncClient) -> None:
    respx.post("http://no-such-host.invalid/v1/chat/completions").mock(
        side_effect=httpx.ConnectError("[Errno -2] Name or service not known")
    )
    lost = OpenAICompatibleProvider("local", OpenAIConfig(base_url="http://no-such-host.invalid/v1"), client)
    with pytest.raises(UpstreamUnavailable) as caught:
        await lost.open(params())
    assert "could not resolve the host" in caught.value.message


@respx.mock
async def test_done_does_not_wait_long_for_a_missing_done_marker(provider: OpenAICompatibleProvider) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield chunk("all") + chunk(finish="stop")
        await asyncio.sleep(30)  # the upstream holds the connection open without [DONE]
        yield DONE

    respx.post(f"{BASE}/chat/completions").mock(
        side_effect=lambda request: httpx.Response(200, headers=SSE, content=body())
    )
    started = time.monotonic()
    events = flat(await collect(provider))
    assert events == [DeltaEvent("all"), DoneEvent(done=True, finish_reason="stop")]
    assert time.monotonic() - started < 5


@respx.mock
async def test_usage_and_done_marker_after_finish_are_waited_for(provider: OpenAICompatibleProvider) -> None:
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n'
    respx.post(f"{BASE}/chat/completions").mock(
        side_effect=sse_reply([chunk("x"), chunk(finish="length"), b": still here\n\n", usage, DONE])
    )
    batches = await collect(provider)
    assert batches[-1] == [DoneEvent(done=True, finish_reason="length", usage=Usage(1, 2))]


# --- usage asked for, and what an empty answer most likely means ----------------------------------


@respx.mock
async def test_usage_is_not_asked_for_when_stream_usage_is_off(client: httpx.AsyncClient) -> None:
    route = respx.post(f"{BASE}/chat/completions").mock(side_effect=sse_reply([chunk("x", finish="stop"), DONE]))
    quiet = OpenAICompatibleProvider("local", OpenAIConfig(base_url=BASE, stream_usage=False), client)
    await collect(quiet)
    assert "stream_options" not in json.loads(route.calls.last.request.content)


def _ended_early(prompt: PromptSize | None, said: bytes = b"") -> ErrorEvent:
    answer = OpenAIAnswer("provider 'local'", (), prompt)
    events = answer.feed(ROLE + said)
    terminal = answer.end_of_stream()
    assert isinstance(terminal, ErrorEvent), events
    return terminal


def test_empty_answer_to_a_prompt_near_the_context_window_is_not_retryable() -> None:
    terminal = _ended_early(PromptSize(chars=4 * 500, context_tokens=512))
    assert terminal.error.code == "upstream_rejected"
    assert not terminal.error.retryable
    assert "probably too long" in terminal.error.message
    assert "512 tokens" in terminal.error.message
    assert "try again" not in terminal.error.message


def test_empty_answer_to_a_short_prompt_is_retryable_and_says_both() -> None:
    terminal = _ended_early(PromptSize(chars=100, context_tokens=512))
    assert terminal.error.code == "stream_interrupted"
    assert terminal.error.retryable
    assert "shorten" in terminal.error.message


def test_empty_answer_without_a_known_context_window_does_not_just_say_retry() -> None:
    terminal = _ended_early(PromptSize(chars=10_000))
    assert terminal.error.code == "stream_interrupted"
    assert "may not fit the model's context window" in terminal.error.message


def test_answer_cut_after_some_text_says_try_again() -> None:
    terminal = _ended_early(PromptSize(chars=4 * 500, context_tokens=512), said=chunk("half an"))
    assert terminal.error.code == "stream_interrupted"
    assert terminal.error.message.endswith("try again")
