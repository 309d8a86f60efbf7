"""What only the OpenAI kind does (SSE comments, ``[DONE]``, ``reasoning``/``reasoning_content``, usage
options, context windows from ``/v1/models``), against respx-mocked upstreams.

The contract cases every kind shares run in ``test_provider_contract.py``.
"""

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

from providers import (
    AgentError,
    ChatEvent,
    ChatMessage,
    ChatParams,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    ListedModel,
    ModelNotFound,
    OpenAIAnswer,
    OpenAICompatibleProvider,
    OpenAIConfig,
    PromptSize,
    RateLimited,
    ReasoningEvent,
    UpstreamRejected,
    UpstreamUnavailable,
    Usage,
)
from tests.providers.wires import DONE, ROLE, SECRET, chunk

BASE = "http://upstream.test/v1"
SSE = {"content-type": "text/event-stream"}


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
async def test_split_at_every_byte_gives_the_same_events(provider: OpenAICompatibleProvider) -> None:
    stream = ROLE + chunk("héllo 🙂") + chunk(" wörld", finish="stop") + DONE
    route = respx.post(f"{BASE}/chat/completions")
    expected = [DeltaEvent("héllo 🙂"), DeltaEvent(" wörld"), DoneEvent(done=True, finish_reason="stop")]
    for cut in range(1, len(stream)):
        route.mock(side_effect=sse_reply([stream[:cut], stream[cut:]]))
        assert flat(await collect(provider)) == expected, cut


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


# --- failures before the stream starts: raised, so the service answers with an HTTP error --


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


def test_usage_omitted_from_done_when_not_reported() -> None:
    line = msgspec.json.encode(DoneEvent(done=True, finish_reason="stop"))
    assert line == b'{"done":true,"finish_reason":"stop"}'


# --- found in review: secrets cut by shortening, non-UTF-8 upstream bytes, odd events ------


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
    (terminal,) = answer.end_of_stream()
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


# --- the model list, and the context windows it reports -----------------------------------------


@pytest.mark.parametrize(
    ("entry", "window"),
    [
        ({"id": "m", "object": "model", "max_model_len": 4096}, 4096),  # vLLM
        ({"id": "m", "meta": {"n_ctx_train": 131072, "n_vocab": 262144}}, 131072),  # llama.cpp's server
        ({"id": "m", "meta": {"n_ctx": 8192, "n_ctx_train": 131072}}, 8192),  # the running context first
        ({"id": "m", "max_context_length": 32768}, 32768),  # LM Studio
        ({"id": "m", "loaded_context_length": 4096, "max_context_length": 32768}, 4096),
        ({"id": "m", "context_length": 2048}, 2048),
        ({"id": "m", "owned_by": "me"}, None),  # llama-cpp-python, OpenAI
        ({"id": "m", "max_model_len": True}, None),
        ({"id": "m", "max_model_len": "4096"}, None),
        ({"id": "m", "max_model_len": 0}, None),
    ],
)
@respx.mock
async def test_listing_reads_the_context_window_where_servers_report_it(
    provider: OpenAICompatibleProvider, entry: dict[str, Any], window: int | None
) -> None:
    respx.get(f"{BASE}/models").mock(return_value=httpx.Response(200, json={"object": "list", "data": [entry]}))
    assert await provider.list_models() == [ListedModel("m", window)]


@respx.mock
async def test_llama_cpp_models_shape_is_a_listing_too(provider: OpenAICompatibleProvider) -> None:
    body = {"models": [{"name": "g.gguf", "model": "/models/g.gguf"}, {"name": "other"}]}
    respx.get(f"{BASE}/models").mock(return_value=httpx.Response(200, json=body))
    assert [m.id for m in await provider.list_models()] == ["/models/g.gguf", "other"]


@respx.mock
async def test_the_listed_context_window_tells_an_over_long_prompt_from_a_broken_stream(
    provider: OpenAICompatibleProvider,
) -> None:
    listing = {"object": "list", "data": [{"id": "small", "max_model_len": 512}, {"id": "big", "max_model_len": 10**6}]}
    respx.get(f"{BASE}/models").mock(return_value=httpx.Response(200, json=listing))
    respx.post(f"{BASE}/chat/completions").mock(side_effect=sse_reply([ROLE]))  # an empty answer, as llama.cpp gives
    long_prompt = params(messages=[ChatMessage("user", "word " * 500)])

    before = flat(await collect(provider, params(model="small", messages=long_prompt.messages)))
    await provider.list_models()
    after = flat(await collect(provider, params(model="small", messages=long_prompt.messages)))
    roomy = flat(await collect(provider, params(model="big", messages=long_prompt.messages)))

    assert only_error(before).error.code == "stream_interrupted"  # the window was not known yet
    rejected = only_error(after).error
    assert (rejected.code, rejected.retryable) == ("upstream_rejected", False)
    assert "512 tokens" in rejected.message
    assert only_error(roomy).error.code == "stream_interrupted"


@respx.mock
async def test_a_new_listing_replaces_the_known_windows(provider: OpenAICompatibleProvider) -> None:
    route = respx.get(f"{BASE}/models")
    route.mock(return_value=httpx.Response(200, json={"data": [{"id": "small", "max_model_len": 512}]}))
    await provider.list_models()
    route.mock(return_value=httpx.Response(200, json={"data": [{"id": "other"}]}))
    await provider.list_models()
    respx.post(f"{BASE}/chat/completions").mock(side_effect=sse_reply([ROLE]))
    events = flat(await collect(provider, params(model="small", messages=[ChatMessage("user", "word " * 500)])))
    assert only_error(events).error.code == "stream_interrupted"
