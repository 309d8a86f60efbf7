"""``POST /chat`` and friends through the ASGI app, with the provider swapped in by DI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient

from app import create_app
from app.config import Limits, Settings
from app.sections import DatabaseSettings
from providers import (
    DeltaEvent,
    ModelNotFound,
    OpenAIConfig,
    RateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tests.fakes import FakeProvider, registry_of

ORIGIN = "http://localhost:5173"


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "providers": {
            "local": OpenAIConfig(model="local-model", max_tokens=512),
            "other": OpenAIConfig(base_url="http://127.0.0.1:9/v1", model="other-default", max_tokens=64),
        },
        "limits": Limits(max_message_chars=50, max_body_bytes=4096),
        "database": DatabaseSettings(enabled=False),  # stateless here; history has its own tests
    }
    values.update(overrides)
    return Settings(**values)


def app_with(provider: FakeProvider, other: FakeProvider | None = None, **overrides: Any) -> Litestar:
    other = other or FakeProvider(name="other", model="other-default", max_tokens=64)
    return create_app(make_settings(**overrides), registry=registry_of(provider, other))


@pytest.fixture
def fake() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def other() -> FakeProvider:
    return FakeProvider(name="other", model="other-default", max_tokens=64)


@pytest.fixture
def client(fake: FakeProvider, other: FakeProvider) -> Iterator[TestClient[Litestar]]:
    with TestClient(app_with(fake, other)) as c:
        yield c


def lines(body: str) -> list[dict[str, Any]]:
    assert body.endswith("\n")
    return [json.loads(line) for line in body.splitlines()]


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert set(body) == {"type", "title", "status", "detail", "code"}
    assert body["detail"]
    return dict(body)


# --- success ------------------------------------------------------------------------------


def test_streams_ndjson_lines(client: TestClient[Litestar]) -> None:
    response = client.post("/chat", json={"message": "hello"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in response.headers
    assert lines(response.text) == [
        {"meta": {"model": "local-model", "provider": "local", "role": "assistant"}},
        {"delta": "Hi"},
        {"delta": " there"},
        {"done": True, "finish_reason": "stop"},
    ]


def test_stream_is_closed_once_after_answer(client: TestClient[Litestar], fake: FakeProvider) -> None:
    client.post("/chat", json={"message": "hello"})
    assert fake.streams[0].closed == 1


def test_messages_are_assembled_in_order(client: TestClient[Litestar], fake: FakeProvider) -> None:
    client.post(
        "/chat",
        json={
            "system": "be brief",
            "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
            "message": "c",
            "temperature": 0.2,
            "top_p": 1,
            "max_tokens": 7,
            "unknown_field": {"ignored": True},
        },
    )
    sent = fake.calls[0]
    assert [(m.role, m.content) for m in sent.messages] == [
        ("system", "be brief"),
        ("user", "a"),
        ("assistant", "b"),
        ("user", "c"),
    ]
    assert (sent.temperature, sent.top_p, sent.max_tokens) == (0.2, 1.0, 7)


def test_stateless_messages_without_message(client: TestClient[Litestar], fake: FakeProvider) -> None:
    assert client.post("/chat", json={"messages": [{"role": "user", "content": "a"}]}).status_code == 200
    assert [m.content for m in fake.calls[0].messages] == ["a"]


@pytest.mark.parametrize(
    ("model", "provider", "model_id", "max_tokens"),
    [
        (None, "local", "local-model", 512),
        ("qwen2.5-7b-instruct", "local", "qwen2.5-7b-instruct", 512),
        ("qwen/qwen3-8b", "local", "qwen/qwen3-8b", 512),
        ("local/qwen/qwen3-8b", "local", "qwen/qwen3-8b", 512),
        ("OTHER/TheBloke/MyLocalModel", "other", "TheBloke/MyLocalModel", 64),
        ("other", "local", "other", 512),
    ],
)
def test_model_resolution(
    client: TestClient[Litestar],
    fake: FakeProvider,
    other: FakeProvider,
    model: str | None,
    provider: str,
    model_id: str,
    max_tokens: int,
) -> None:
    body: dict[str, Any] = {"message": "x"}
    if model is not None:
        body["model"] = model
    response = client.post("/chat", json=body)
    answered = {"local": fake, "other": other}[provider]
    assert answered.sent == [(model_id, max_tokens)]
    assert (fake.calls + other.calls) == answered.calls
    assert lines(response.text)[0]["meta"] == {"model": model_id, "provider": provider, "role": "assistant"}


@pytest.mark.parametrize("model", ["other/", "LOCAL/"])
def test_provider_without_model_is_invalid_request(
    client: TestClient[Litestar], fake: FakeProvider, other: FakeProvider, model: str
) -> None:
    problem = assert_problem(client.post("/chat", json={"message": "x", "model": model}), 400, "invalid_request")
    assert "no model" in problem["detail"]
    assert fake.calls == other.calls == []


def test_body_without_content_type_is_still_json(client: TestClient[Litestar]) -> None:
    response = client.post("/chat", content=b'{"message": "hi"}')
    assert response.status_code == 200


def test_health(client: TestClient[Litestar]) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert client.head("/health").status_code == 200


# --- bad input: 400/413/404/405 in problem+json, never a 500 -----------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe\x00garbage",
        b'{"message": "\xff"}',
        b"[1, 2]",
        b'"just a string"',
        b"null",
        b"{}",
        b'{"message": ""}',
        b'{"message": 123}',
        b'{"message": null}',
        b'{"message": ["a"]}',
        b'{"message": "x", "temperature": "1.5"}',
        b'{"message": "x", "temperature": 2.5}',
        b'{"message": "x", "temperature": -0.1}',
        b'{"message": "x", "top_p": 1.5}',
        b'{"message": "x", "max_tokens": 0}',
        b'{"message": "x", "max_tokens": 1.5}',
        b'{"message": "x", "max_tokens": true}',
        b'{"message": "x", "model": ""}',
        b'{"message": "x", "model": 5}',
        b'{"messages": []}',
        b'{"messages": [{"role": "tool", "content": "x"}]}',
        b'{"messages": [{"role": "user"}]}',
        b'{"messages": "hello"}',
        b'{"message": "x", "system": 1}',
        b'{"message": "' + b"x" * 51 + b'"}',
        b'{"message": "x", "temperature": 1e999}',
    ],
)
def test_bad_bodies_are_invalid_request(client: TestClient[Litestar], fake: FakeProvider, body: bytes) -> None:
    response = client.post("/chat", content=body, headers={"content-type": "application/json"})
    assert_problem(response, 400, "invalid_request")
    assert fake.calls == []


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_is_invalid_request(fake: FakeProvider, depth: int) -> None:
    body = b'{"message": "x", "messages": ' + b"[" * depth + b"]" * depth + b"}"
    with TestClient(app_with(fake, limits=Limits(max_body_bytes=1_048_576))) as client:
        response = client.post("/chat", content=body, headers={"content-type": "application/json"})
    assert_problem(response, 400, "invalid_request")


def test_empty_body_says_what_to_send(client: TestClient[Litestar]) -> None:
    problem = assert_problem(client.post("/chat"), 400, "invalid_request")
    assert "message" in problem["detail"]


def test_message_limit_counts_characters_not_bytes(client: TestClient[Litestar]) -> None:
    assert client.post("/chat", json={"message": "é" * 50}).status_code == 200
    assert_problem(client.post("/chat", json={"message": "é" * 51}), 400, "invalid_request")


def test_body_over_limit_is_payload_too_large(client: TestClient[Litestar], fake: FakeProvider) -> None:
    response = client.post("/chat", content=b'{"message": "' + b"x" * 5000 + b'"}')
    assert_problem(response, 413, "payload_too_large")
    assert fake.calls == []


def test_unknown_route_is_not_found(client: TestClient[Litestar]) -> None:
    assert_problem(client.get("/nope"), 404, "not_found")


def test_wrong_method_is_405_problem(client: TestClient[Litestar]) -> None:
    assert_problem(client.get("/chat"), 405, "invalid_request")


# --- failures before the stream starts come out as HTTP errors ----------------------------


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (ModelNotFound("no such model"), 404, "model_not_found"),
        (UpstreamUnavailable("could not connect"), 502, "upstream_unavailable"),
        (UpstreamUnavailable("loading", status=503), 503, "upstream_unavailable"),
        (UpstreamTimeout("slow"), 504, "upstream_timeout"),
    ],
)
def test_provider_errors_before_start(error: Exception, status: int, code: str) -> None:
    with TestClient(app_with(FakeProvider(error=error))) as client:
        problem = assert_problem(client.post("/chat", json={"message": "x"}), status, code)
    assert problem["detail"] == str(error)


def test_rate_limited_carries_retry_after() -> None:
    with TestClient(app_with(FakeProvider(error=RateLimited("slow down", retry_after="3")))) as client:
        response = client.post("/chat", json={"message": "x"})
    assert_problem(response, 429, "rate_limited")
    assert response.headers["retry-after"] == "3"


def test_unexpected_exception_is_internal_error_without_details() -> None:
    with TestClient(app_with(FakeProvider(error=RuntimeError("secret internals")))) as client:
        problem = assert_problem(client.post("/chat", json={"message": "x"}), 500, "internal_error")
    assert "secret internals" not in problem["detail"]


# --- failures after the start come out as one error line ----------------------------------


def test_exception_mid_stream_ends_with_one_error_line() -> None:
    fake = FakeProvider([[DeltaEvent("partial")]], fail_after=RuntimeError("bug"))
    with TestClient(app_with(fake)) as client:
        response = client.post("/chat", json={"message": "x"})
    got = lines(response.text)
    assert got[1] == {"delta": "partial"}
    assert got[-1]["error"]["code"] == "internal_error"
    assert len(got) == 3
    assert fake.streams[0].closed == 1


def test_contract_error_raised_mid_stream_becomes_its_error_line() -> None:
    fake = FakeProvider([[DeltaEvent("partial")]], fail_after=UpstreamTimeout("went silent"))
    with TestClient(app_with(fake)) as client:
        got = lines(client.post("/chat", json={"message": "x"}).text)
    assert got[1:] == [
        {"delta": "partial"},
        {"error": {"code": "upstream_timeout", "message": "went silent", "retryable": True}},
    ]


def test_stream_without_terminal_event_gets_an_error_line() -> None:
    with TestClient(app_with(FakeProvider([[DeltaEvent("partial")]]))) as client:
        got = lines(client.post("/chat", json={"message": "x"}).text)
    assert got[-1]["error"]["code"] == "internal_error"
    assert sum(1 for line in got if "error" in line or "done" in line) == 1


# --- CORS ---------------------------------------------------------------------------------


def test_cors_preflight(client: TestClient[Litestar]) -> None:
    response = client.options(
        "/chat",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "content-type" in response.headers["access-control-allow-headers"].lower()


@pytest.mark.parametrize(("path", "body"), [("/chat", {"message": "x"}), ("/chat", {"message": ""})])
def test_cors_headers_on_stream_and_errors(client: TestClient[Litestar], path: str, body: dict[str, Any]) -> None:
    response = client.post(path, json=body, headers={"origin": ORIGIN})
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "retry-after" in response.headers["access-control-expose-headers"].lower()


def test_cors_other_origin_gets_no_allow_header(client: TestClient[Litestar]) -> None:
    response = client.post("/chat", json={"message": "x"}, headers={"origin": "http://evil.example"})
    assert "access-control-allow-origin" not in response.headers


# --- OpenAPI ------------------------------------------------------------------------------


def test_openapi_documents_chat(client: TestClient[Litestar]) -> None:
    doc = client.get("/schema/openapi.json").json()
    chat = doc["paths"]["/chat"]["post"]
    ok = chat["responses"]["200"]["content"]
    assert list(ok) == ["application/x-ndjson"]
    event_refs = {ref["$ref"].rsplit("/", 1)[-1] for ref in ok["application/x-ndjson"]["schema"]["oneOf"]}
    assert event_refs == {
        "MetaEvent",
        "DeltaEvent",
        "ReasoningEvent",
        "ToolCallDeltaEvent",
        "ToolCallEvent",
        "DoneEvent",
        "ErrorEvent",
    }
    for status in ("400", "404", "413", "429", "502", "503", "504"):
        assert "application/problem+json" in chat["responses"][status]["content"], status
    body_ref = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body_ref.endswith("/ChatRequest")
    assert "message" in doc["components"]["schemas"]["ChatRequest"]["properties"]


def test_openapi_health_takes_no_body(client: TestClient[Litestar]) -> None:
    health = client.get("/schema/openapi.json").json()["paths"]["/health"]
    assert "requestBody" not in health["get"]
    assert set(health["get"]["responses"]) == {"200"}


def test_docs_page(client: TestClient[Litestar]) -> None:
    response = client.get("/schema")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")


# --- no input yields a 500 ----------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
_bodies = st.one_of(
    st.binary(max_size=200),
    st.dictionaries(
        st.sampled_from(["message", "messages", "system", "model", "temperature", "top_p", "max_tokens", "x"]),
        _json_values,
        max_size=5,
    ).map(lambda d: json.dumps(d).encode()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies)
def test_no_input_yields_a_500(client: TestClient[Litestar], body: bytes) -> None:
    response = client.post("/chat", content=body, headers={"content-type": "application/json"})
    assert response.status_code in (200, 400, 413), response.text
    if response.status_code != 200:
        assert response.headers["content-type"].startswith("application/problem+json")


def test_whole_prompt_is_bounded_by_max_prompt_chars(fake: FakeProvider) -> None:
    limits = Limits(max_message_chars=50, max_body_bytes=1_048_576, max_prompt_chars=100)
    with TestClient(app_with(fake, limits=limits)) as client:
        at_limit = {"system": "s" * 40, "messages": [{"role": "user", "content": "u" * 30}], "message": "m" * 30}
        assert client.post("/chat", json=at_limit).status_code == 200
        over = {**at_limit, "messages": [{"role": "user", "content": "u" * 31}]}
        problem = assert_problem(client.post("/chat", json=over), 400, "invalid_request")
    assert "limits.max_prompt_chars" in problem["detail"]
    assert len(fake.calls) == 1
