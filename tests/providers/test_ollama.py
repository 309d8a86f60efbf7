"""What only the Ollama kind does: NDJSON split at ``\\n`` only, ``think``, ``/api/tags``, a model still loading.

Against respx-mocked upstreams and, over real loopback sockets, the fake upstream's Ollama
routes with the service's own upstream client. The contract cases every kind shares run in
``test_provider_contract.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from app.config import Settings
from app.lifespan import make_client, make_transport
from providers import (
    ChatEvent,
    ChatMessage,
    ChatParams,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    ListedModel,
    ModelNotFound,
    NDJSONLines,
    OllamaConfig,
    OllamaProvider,
    ReasoningEvent,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
    Usage,
)
from providers.kinds import PROVIDER_KINDS
from tests.fake_upstream import FakeUpstream, Reply, ndjson_chunks, ndjson_line
from tests.providers.wires import ollama_done, ollama_message

BASE = "http://ollama.test:11434"
NDJSON = {"content-type": "application/x-ndjson"}


def params(**overrides: Any) -> ChatParams:
    values: dict[str, Any] = {"model": "llama3.2", "messages": [ChatMessage("user", "hi")], "max_tokens": 16}
    values.update(overrides)
    return ChatParams(**values)


def reply(*parts: bytes, headers: dict[str, str] | None = None) -> Any:
    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    return lambda request: httpx.Response(200, headers=headers or NDJSON, content=body())


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


def ollama(client: httpx.AsyncClient, **config: Any) -> OllamaProvider:
    return OllamaProvider("local", OllamaConfig(**{"base_url": BASE, **config}), client)


async def collect(provider: OllamaProvider, p: ChatParams | None = None) -> list[list[ChatEvent]]:
    stream = await provider.open(p or params())
    try:
        return [list(batch) async for batch in stream]
    finally:
        await stream.aclose()


def flat(batches: Sequence[Sequence[ChatEvent]]) -> list[ChatEvent]:
    return [event for batch in batches for event in batch]


# --- the kind and its defaults ------------------------------------------------------------------


def test_the_kind_is_one_registry_entry_with_its_own_defaults() -> None:
    kind = PROVIDER_KINDS["ollama"]
    assert kind.config is OllamaConfig
    config = OllamaConfig()
    assert (config.kind, config.base_url, config.model) == ("ollama", "http://localhost:11434", "llama3.2")
    assert (config.max_tokens, config.connect_timeout_seconds, config.timeout_seconds) == (512, 5.0, 120.0)
    assert config.think is None


@pytest.mark.parametrize(("think", "sent"), [(None, None), (True, True), (False, False), ("high", "high")])
@respx.mock
async def test_think_is_sent_only_when_configured(client: httpx.AsyncClient, think: bool | None, sent: Any) -> None:
    route = respx.post(f"{BASE}/api/chat").mock(side_effect=reply(ollama_done()))
    await collect(ollama(client, think=think))
    body = json.loads(route.calls.last.request.content)
    assert body.get("think", "absent") == ("absent" if sent is None else sent)
    assert route.calls.last.request.headers["accept"] == "application/x-ndjson"


# --- NDJSON: lines end at \n and nowhere else -------------------------------------------------------


# What str.splitlines (and so httpx's aiter_lines) splits on and JSON allows raw inside a string; the
# control characters it also splits on (\x1c, \x0b, …) must be escaped in JSON, so never arrive raw.
@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
@respx.mock
async def test_line_separators_inside_json_strings_do_not_split_lines(
    client: httpx.AsyncClient, separator: str
) -> None:
    text = f"one{separator}two"
    body = ollama_message(text) + ollama_done()
    assert separator.encode() in body  # raw, not escaped
    route = respx.post(f"{BASE}/api/chat")
    for cut in range(1, len(body)):
        route.mock(side_effect=reply(body[:cut], body[cut:]))
        assert flat(await collect(ollama(client))) == [DeltaEvent(text), DoneEvent(True, "stop")], cut


@given(
    lines=st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")), max_size=8),
    cuts=st.lists(st.integers(0, 200), max_size=6),
)
def test_line_splitting_is_byte_exact_wherever_the_reads_split(lines: list[bytes], cuts: list[int]) -> None:
    body = b"".join(line + b"\n" for line in lines)
    points = sorted({min(c, len(body)) for c in cuts})
    splitter = NDJSONLines()
    got: list[bytes] = []
    for a, b in zip([0, *points], [*points, len(body)], strict=True):
        got += splitter.feed(body[a:b])
    assert got == lines
    assert splitter.rest() == b""


def test_an_unfinished_last_line_is_kept_for_the_end() -> None:
    splitter = NDJSONLines()
    assert splitter.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert splitter.feed(b":2}") == []
    assert splitter.rest() == b'{"b":2}'
    assert splitter.rest() == b""


@respx.mock
async def test_crlf_and_blank_lines_are_fine(client: httpx.AsyncClient) -> None:
    body = b"\r\n" + ollama_message("a").replace(b"\n", b"\r\n") + b"\n  \n" + ollama_done().replace(b"\n", b"\r\n")
    respx.post(f"{BASE}/api/chat").mock(side_effect=reply(body))
    assert flat(await collect(ollama(client))) == [DeltaEvent("a"), DoneEvent(True, "stop")]


@respx.mock
async def test_a_last_done_line_without_a_newline_still_ends_the_answer(client: httpx.AsyncClient) -> None:
    # The streaming docs' example: the last piece of text rides on the done line.
    respx.post(f"{BASE}/api/chat").mock(
        side_effect=reply(ollama_message("That"), ollama_done("stop", (3, 2), content="!").rstrip(b"\n"))
    )
    assert flat(await collect(ollama(client))) == [
        DeltaEvent("That"),
        DeltaEvent("!"),
        DoneEvent(True, "stop", Usage(prompt_tokens=3, completion_tokens=2)),
    ]


# --- what the lines say -----------------------------------------------------------------------------


@respx.mock
async def test_thinking_content_and_counts(client: httpx.AsyncClient) -> None:
    respx.post(f"{BASE}/api/chat").mock(
        side_effect=reply(
            ollama_message(thinking="Let me think"),
            ollama_message("", thinking=""),  # empty pieces are no events
            ollama_message("It is 4."),
            ollama_done("stop", (26, 282)),
        )
    )
    assert flat(await collect(ollama(client))) == [
        ReasoningEvent("Let me think"),
        DeltaEvent("It is 4."),
        DoneEvent(True, "stop", Usage(prompt_tokens=26, completion_tokens=282)),
    ]


@respx.mock
async def test_extra_and_null_fields_are_normal(client: httpx.AsyncClient) -> None:
    odd = ndjson_line(
        {
            "model": "llama3.2",
            "created_at": "2023-08-04T08:52:19.385406455-07:00",
            "message": {"role": "assistant", "content": "The", "images": None, "thinking": None, "tool_calls": []},
            "done": False,
            "logprobs": None,
        }
    )
    respx.post(f"{BASE}/api/chat").mock(
        side_effect=reply(odd, ndjson_line({"message": None, "done": False}), ollama_done())
    )
    assert flat(await collect(ollama(client))) == [DeltaEvent("The"), DoneEvent(True, "stop")]


@pytest.mark.parametrize(("reason", "finish"), [(None, None), ("length", "length"), ("load", "load")])
@respx.mock
async def test_done_reason_is_the_finish_reason_as_given(client: httpx.AsyncClient, reason: Any, finish: Any) -> None:
    respx.post(f"{BASE}/api/chat").mock(side_effect=reply(ollama_message("x"), ollama_done(reason)))
    assert flat(await collect(ollama(client)))[-1] == DoneEvent(True, finish)


@respx.mock
async def test_done_does_not_wait_for_the_body_to_end(client: httpx.AsyncClient) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield ollama_message("all") + ollama_done()
        await asyncio.sleep(30)  # the server keeps the connection open after its done line
        yield b""

    respx.post(f"{BASE}/api/chat").mock(side_effect=lambda request: httpx.Response(200, headers=NDJSON, content=body()))
    started = time.monotonic()
    assert flat(await collect(ollama(client))) == [DeltaEvent("all"), DoneEvent(True, "stop")]
    assert time.monotonic() - started < 2


@respx.mock
async def test_lines_after_done_are_ignored(client: httpx.AsyncClient) -> None:
    respx.post(f"{BASE}/api/chat").mock(side_effect=reply(ollama_done() + ollama_message("late") + b'{"error":"x"}\n'))
    assert flat(await collect(ollama(client))) == [DoneEvent(True, "stop")]


@pytest.mark.parametrize("line", [b"[1, 2]\n", b'"text"\n', b'{"message": {"content": 5}}\n', b'{"done": "yes"}\n'])
@respx.mock
async def test_json_that_is_not_an_answer_line_is_a_protocol_error(client: httpx.AsyncClient, line: bytes) -> None:
    respx.post(f"{BASE}/api/chat").mock(side_effect=reply(ollama_message("ok"), line, ollama_done()))
    events = flat(await collect(ollama(client)))
    assert events[0] == DeltaEvent("ok")
    terminal = events[-1]
    assert isinstance(terminal, ErrorEvent)
    assert terminal.error.code == "upstream_protocol_error"
    assert len(events) == 2


# --- before the stream: Ollama's error bodies, a model still loading, the wrong API -----------------


@respx.mock
async def test_a_model_that_is_not_pulled_is_model_not_found(client: httpx.AsyncClient) -> None:
    respx.post(f"{BASE}/api/chat").mock(
        return_value=httpx.Response(404, json={"error": 'model "llama3.3" not found, try pulling it first'})
    )
    with pytest.raises(ModelNotFound) as caught:
        await ollama(client).open(params(model="llama3.3"))
    assert "try pulling it first" in caught.value.message
    assert "'llama3.3'" in caught.value.message


@respx.mock
async def test_no_headers_while_the_model_loads_is_a_timeout_that_says_why(client: httpx.AsyncClient) -> None:
    respx.post(f"{BASE}/api/chat").mock(side_effect=httpx.ReadTimeout("no headers yet"))
    with pytest.raises(UpstreamTimeout) as caught:
        await ollama(client, timeout_seconds=3).open(params())
    assert "sent no response within 3 s" in caught.value.message
    assert "may still be loading the model" in caught.value.message


@pytest.mark.parametrize(
    ("status", "message", "our_status"),
    [
        (503, "server busy, please try again.  maximum pending requests exceeded", 503),
        (500, "timed out waiting for llama runner to start - progress 0.00 - ", 502),
        (500, "llama runner process has terminated: exit status 2", 502),
    ],
)
@respx.mock
async def test_a_busy_or_failed_loader_is_retryable(
    client: httpx.AsyncClient, status: int, message: str, our_status: int
) -> None:
    respx.post(f"{BASE}/api/chat").mock(return_value=httpx.Response(status, json={"error": message}))
    with pytest.raises(UpstreamUnavailable) as caught:
        await ollama(client).open(params())
    assert caught.value.status == our_status
    assert caught.value.retryable
    assert " ".join(message.split()) in caught.value.message  # on one line, runs of spaces as one


@pytest.mark.parametrize(
    ("content_type", "hint"),
    [("text/event-stream", 'use kind = "openai"'), ("text/html", "without /v1"), ("text/plain", "without /v1")],
)
@respx.mock
async def test_another_api_says_how_to_fix_the_config(client: httpx.AsyncClient, content_type: str, hint: str) -> None:
    respx.post(f"{BASE}/api/chat").mock(side_effect=reply(b"data: {}\n\n", headers={"content-type": content_type}))
    with pytest.raises(UpstreamProtocolError) as caught:
        await ollama(client).open(params())
    assert hint in caught.value.message


@respx.mock
async def test_json_that_is_neither_answer_nor_error_is_a_protocol_error(client: httpx.AsyncClient) -> None:
    respx.post(f"{BASE}/api/chat").mock(return_value=httpx.Response(200, json={"status": "success"}))
    with pytest.raises(UpstreamProtocolError):
        await ollama(client).open(params())


# --- /api/tags ----------------------------------------------------------------------------------------


@respx.mock
async def test_tags_list_names_and_latest_answers_without_its_tag(client: httpx.AsyncClient) -> None:
    tags = {
        "models": [
            {"name": "llama3.2:latest", "model": "llama3.2:latest", "size": 2019393189, "details": {"family": "llama"}},
            {"name": "qwen3:8b", "model": "qwen3:8b"},
            {"model": "only-model-field:latest"},
            "not an entry",
            {"name": ""},
            {"name": ":latest"},
        ]
    }
    respx.get(f"{BASE}/api/tags").mock(return_value=httpx.Response(200, json=tags))
    assert await ollama(client).list_models() == [
        ListedModel("llama3.2:latest", aliases=("llama3.2",)),
        ListedModel("qwen3:8b"),
        ListedModel("only-model-field:latest", aliases=("only-model-field",)),
        ListedModel(":latest"),
    ]


# --- over real sockets: the fake upstream's Ollama routes and the service's own client -------------


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        yield up


@pytest.fixture
async def service_client() -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings()
    async with make_client(settings, make_transport(settings)) as c:
        yield c


async def test_real_sockets_stream_split_at_every_byte(
    upstream: FakeUpstream, service_client: httpx.AsyncClient
) -> None:
    tokens = ["héllo", " 🙂\u2028", " wörld"]
    body = b"".join(ndjson_chunks(tokens, thinking=["hm"], usage=(4, 3)))
    provider = OllamaProvider("local", OllamaConfig(base_url=upstream.root_url), service_client)
    expected = [
        ReasoningEvent("hm"),
        *(DeltaEvent(t) for t in tokens),
        DoneEvent(True, "stop", Usage(prompt_tokens=4, completion_tokens=3)),
    ]
    for cut in range(1, len(body)):
        upstream.on("split", Reply(headers=dict(NDJSON), writes=[body[:cut], body[cut:]], delay=0.001))
        assert flat(await collect(provider, params(model="split"))) == expected, cut
    assert upstream.requests[-1].path == "/api/chat"
    assert upstream.requests[-1].body["options"] == {"num_predict": 16}


async def test_real_sockets_default_reply_list_and_errors(
    upstream: FakeUpstream, service_client: httpx.AsyncClient
) -> None:
    upstream.on("gone", Reply.json({"error": 'model "gone" not found, try pulling it first'}, 404))
    upstream.on("broken", Reply(headers=dict(NDJSON), writes=[*ndjson_chunks(["a"], done=False), b'{"error":"oom"}\n']))
    upstream.on("cut", Reply(headers=dict(NDJSON), writes=ndjson_chunks(["a"], done=False), close_abruptly=True))
    provider = OllamaProvider("local", OllamaConfig(base_url=upstream.root_url, model="fake"), service_client)

    events = flat(await collect(provider, params(model=None)))
    assert "".join(e.delta for e in events if isinstance(e, DeltaEvent)) == "Hello from the fake upstream!"
    assert events[-1] == DoneEvent(True, "stop", Usage(prompt_tokens=5, completion_tokens=7))

    assert [m.id for m in await provider.list_models()] == ["fake:latest", "gone", "broken", "cut"]
    with pytest.raises(ModelNotFound):
        await provider.open(params(model="gone"))
    broken = flat(await collect(provider, params(model="broken")))
    assert broken[0] == DeltaEvent("a")
    assert isinstance(broken[-1], ErrorEvent)
    assert (broken[-1].error.code, broken[-1].error.message) == (
        "upstream_unavailable",
        f"provider 'local' at {upstream.root_url} reported an error: oom",
    )
    cut = flat(await collect(provider, params(model="cut")))
    assert isinstance(cut[-1], ErrorEvent)
    assert cut[-1].error.code == "stream_interrupted"


async def test_real_sockets_model_still_loading(upstream: FakeUpstream, service_client: httpx.AsyncClient) -> None:
    # Ollama sends no headers until the model is loaded: a load within the silence limit is just slow.
    upstream.on("loading", _loading(0.3))
    upstream.on("stuck", _loading(5))
    provider = OllamaProvider("local", OllamaConfig(base_url=upstream.root_url, timeout_seconds=1), service_client)
    events = flat(await collect(provider, params(model="loading")))
    assert events[0] == DeltaEvent("ready")
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as caught:
        await provider.open(params(model="stuck"))
    assert time.monotonic() - started < 3
    assert "may still be loading the model" in caught.value.message


def _loading(seconds: float) -> Reply:
    loaded = Reply.ndjson(["ready"])
    loaded.head_delay = seconds
    return loaded
