"""Models and providers over real sockets (CONTRACT §9): ``GET /models``, routing, fallback, the Ollama kind.

The service runs under uvicorn; its providers are fake upstreams on loopback (OpenAI-style and
Ollama-style), a port nobody listens on (refused), a port whose accept queue is full (a
connect that hangs), and a fake whose ``/v1/models`` never answers in time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.config import Settings
from providers import OllamaConfig, OpenAIConfig
from tests.fake_upstream import FakeUpstream, Reply, ndjson_chunks, sse_chunks
from tests.integration.conftest import NO_DATABASE, LiveService, free_port
from tests.providers.test_http11_transport import full_accept_queue


async def read_lines(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) async for line in response.aiter_lines() if line]


def text_of(lines: list[dict[str, Any]]) -> str:
    return "".join(line["delta"] for line in lines if "delta" in line)


def listings(upstream: FakeUpstream, path: str = "/v1/models") -> int:
    return sum(1 for r in upstream.requests if r.method == "GET" and r.path == path)


def chats(upstream: FakeUpstream) -> int:
    return sum(1 for r in upstream.requests if r.method == "POST")


@pytest.fixture
async def second() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        yield up


@pytest.fixture
async def running() -> AsyncIterator[list[LiveService]]:
    services: list[LiveService] = []
    yield services
    for service in services:
        await service.stop()


async def serve(running: list[LiveService], **settings: Any) -> LiveService:
    service = LiveService(Settings(**{"database": NO_DATABASE, **settings}))  # stateless: meta is the routing
    await service.start()
    running.append(service)
    return service


# --- GET /models ---------------------------------------------------------------------------------


async def test_models_from_every_provider_with_one_down_and_one_slow(
    upstream: FakeUpstream, second: FakeUpstream, running: list[LiveService], client: httpx.AsyncClient
) -> None:
    upstream.route("GET", "/v1/models", Reply.json({"data": [{"id": "local-model"}, {"id": "qwen/qwen3-8b"}]}))
    slow_listing = Reply.json({"data": [{"id": "never-seen"}]})
    slow_listing.head_delay = 30
    second.route("GET", "/v1/models", slow_listing)
    service = await serve(
        running,
        providers={
            "local": OpenAIConfig(base_url=upstream.base_url),
            "down": OpenAIConfig(base_url=f"http://127.0.0.1:{free_port()}/v1", model="down-model"),
            "slow": OpenAIConfig(base_url=second.base_url, model="slow-model", timeout_seconds=0.5),
            "laptop": OllamaConfig(base_url=upstream.root_url, models=["pinned:7b"]),
        },
    )

    started = time.monotonic()
    response = await client.get(f"{service.url}/models")
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert 0.4 < elapsed < 2.0  # the slow one was cut off at its own 0.5 s; nobody waited longer
    body = response.json()
    assert [(e["id"], e["default"]) for e in body["data"]] == [
        ("local/local-model", True),
        ("local/qwen/qwen3-8b", False),
        ("down/down-model", False),
        ("slow/slow-model", False),
        ("laptop/llama3.2", False),
        ("laptop/fake:latest", False),
        ("laptop/pinned:7b", False),
    ]
    assert all(e["id"] == f"{e['provider']}/{e['model']}" for e in body["data"])
    errors = {e["provider"]: e for e in body["errors"]}
    assert set(errors) == {"down", "slow"}
    assert errors["down"]["code"] == "upstream_unavailable"
    assert "could not connect to provider 'down'" in errors["down"]["message"]
    assert errors["slow"]["code"] == "upstream_timeout"
    assert errors["slow"]["message"] == (
        f"provider 'slow' at {second.base_url} did not answer GET /v1/models within 0.5 s"
    )


async def test_successes_are_cached_until_they_expire_and_failures_are_asked_again(
    upstream: FakeUpstream, second: FakeUpstream, running: list[LiveService], client: httpx.AsyncClient
) -> None:
    second.route("GET", "/v1/models", Reply.json({"error": {"message": "listing is broken"}}, 500))
    service = await serve(
        running,
        models_cache_seconds=0.5,
        providers={"local": OpenAIConfig(base_url=upstream.base_url), "flaky": OpenAIConfig(base_url=second.base_url)},
    )
    for _ in range(3):
        body = (await client.get(f"{service.url}/models")).json()
        assert [e["code"] for e in body["errors"]] == ["upstream_unavailable"]
    assert listings(upstream) == 1  # cached
    assert listings(second) == 3  # failures are not
    await asyncio.sleep(0.6)
    await client.get(f"{service.url}/models")
    assert listings(upstream) == 2  # expired


# --- routing a chat --------------------------------------------------------------------------------


async def test_a_bare_id_goes_to_the_provider_that_lists_it_and_meta_says_so(
    upstream: FakeUpstream, second: FakeUpstream, running: list[LiveService], client: httpx.AsyncClient
) -> None:
    second.on("TheBloke/MyLocalModel", Reply.sse(["from", " the", " gpu"]))
    service = await serve(
        running,
        providers={"local": OpenAIConfig(base_url=upstream.base_url), "gpu": OpenAIConfig(base_url=second.base_url)},
    )
    async with client.stream(
        "POST", f"{service.url}/chat", json={"message": "x", "model": "TheBloke/MyLocalModel"}
    ) as response:
        lines = await read_lines(response)
    assert lines[0] == {"meta": {"model": "TheBloke/MyLocalModel", "role": "assistant", "provider": "gpu"}}
    assert text_of(lines) == "from the gpu"
    assert chats(upstream) == 0
    assert second.requests[-1].body["model"] == "TheBloke/MyLocalModel"


async def test_a_bare_id_two_others_list_is_a_400_naming_them(
    upstream: FakeUpstream, second: FakeUpstream, running: list[LiveService], client: httpx.AsyncClient
) -> None:
    async with FakeUpstream() as third:
        for up in (second, third):
            up.on("same-model", Reply.sse(["x"]))
        service = await serve(
            running,
            providers={
                "local": OpenAIConfig(base_url=upstream.base_url),
                "gpu": OpenAIConfig(base_url=second.base_url),
                "laptop": OpenAIConfig(base_url=third.base_url),
            },
        )
        response = await client.post(f"{service.url}/chat", json={"message": "x", "model": "same-model"})
        assert chats(second) == chats(third) == 0
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "invalid_request"
    assert '"gpu/same-model"' in problem["detail"]
    assert '"laptop/same-model"' in problem["detail"]


# --- fallback, before the stream only ----------------------------------------------------------------


def fallback_settings(local_url: str, backup: FakeUpstream, **local: Any) -> dict[str, Any]:
    return {
        "providers": {
            "local": OpenAIConfig(base_url=local_url, fallback=["backup"], **local),
            "backup": OpenAIConfig(base_url=backup.base_url, model="backup-model"),
        }
    }


async def test_a_refused_connection_falls_back_and_meta_names_who_answered(
    second: FakeUpstream, running: list[LiveService], client: httpx.AsyncClient
) -> None:
    service = await serve(running, **fallback_settings(f"http://127.0.0.1:{free_port()}/v1", second))
    async with client.stream("POST", f"{service.url}/chat", json={"message": "x", "model": "local/big"}) as response:
        assert response.status_code == 200
        lines = await read_lines(response)
    assert lines[0] == {"meta": {"model": "backup-model", "role": "assistant", "provider": "backup"}}
    assert text_of(lines) == "Hello from the fake upstream!"
    assert second.requests[-1].body["model"] == "backup-model"  # its own default, not "big"


async def test_a_connect_timeout_falls_back(
    second: FakeUpstream, running: list[LiveService], client: httpx.AsyncClient
) -> None:
    with full_accept_queue() as port:
        service = await serve(
            running, **fallback_settings(f"http://127.0.0.1:{port}/v1", second, connect_timeout_seconds=0.3)
        )
        started = time.monotonic()
        async with client.stream("POST", f"{service.url}/chat", json={"message": "x"}) as response:
            assert response.status_code == 200
            lines = await read_lines(response)
        elapsed = time.monotonic() - started
    assert 0.25 < elapsed < 3
    assert lines[0]["meta"]["provider"] == "backup"
    assert lines[-1] == {"done": True, "finish_reason": "stop"}


async def test_no_fallback_on_a_4xx(
    upstream: FakeUpstream, second: FakeUpstream, running: list[LiveService], client: httpx.AsyncClient
) -> None:
    upstream.on("x", Reply.json({"error": {"message": "context length exceeded"}}, 400))
    service = await serve(running, **fallback_settings(upstream.base_url, second))
    response = await client.post(f"{service.url}/chat", json={"message": "x", "model": "local/x"})
    assert response.status_code == 400
    assert response.json()["code"] == "upstream_rejected"
    assert second.requests == []


async def test_no_fallback_once_the_first_delta_went_out(
    upstream: FakeUpstream, second: FakeUpstream, running: list[LiveService], client: httpx.AsyncClient
) -> None:
    upstream.on("x", Reply(writes=sse_chunks(["kept"], finish_reason=None, done=False), close_abruptly=True))
    service = await serve(running, **fallback_settings(upstream.base_url, second))
    async with client.stream("POST", f"{service.url}/chat", json={"message": "x", "model": "local/x"}) as response:
        assert response.status_code == 200
        lines = await read_lines(response)
    assert lines[0]["meta"]["provider"] == "local"
    assert text_of(lines) == "kept"
    assert lines[-1]["error"]["code"] == "stream_interrupted"
    assert second.requests == []


# --- the Ollama kind through the service -------------------------------------------------------------


async def test_an_ollama_provider_streams_the_same_events(
    upstream: FakeUpstream, running: list[LiveService], client: httpx.AsyncClient
) -> None:
    upstream.on(
        "qwen3:8b",
        Reply.ndjson(["4", " is", " the", " answer"], thinking=["2+2", "…"], usage=(12, 4), delay=0.01),
    )
    service = await serve(
        running,
        providers={
            "local": OllamaConfig(
                base_url=upstream.root_url, api_key="sk-ollama", extra_headers={"X-Upstream-Token": "hdr"}
            )
        },
    )
    async with client.stream("POST", f"{service.url}/chat", json={"message": "2+2?", "model": "qwen3:8b"}) as r:
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = await read_lines(r)
    assert lines[0] == {"meta": {"model": "qwen3:8b", "role": "assistant", "provider": "local"}}
    assert [line["reasoning"] for line in lines if "reasoning" in line] == ["2+2", "…"]
    assert text_of(lines) == "4 is the answer"
    assert lines[-1] == {"done": True, "finish_reason": "stop", "usage": {"prompt_tokens": 12, "completion_tokens": 4}}
    request = upstream.requests[-1]
    assert (request.method, request.path) == ("POST", "/api/chat")
    assert request.body == {
        "model": "qwen3:8b",
        "messages": [{"role": "user", "content": "2+2?"}],
        "stream": True,
        "options": {"num_predict": 512},
    }
    assert request.headers["authorization"] == "Bearer sk-ollama"
    assert request.headers["x-upstream-token"] == "hdr"


async def test_ollama_errors_and_its_model_list_through_the_service(
    upstream: FakeUpstream, second: FakeUpstream, running: list[LiveService], client: httpx.AsyncClient
) -> None:
    upstream.on("mistral:latest", Reply.ndjson(["listed"]))
    upstream.on("missing", Reply.json({"error": 'model "missing" not found, try pulling it first'}, 404))
    upstream.on(
        "oom",
        Reply(
            headers={"content-type": "application/x-ndjson"},
            writes=[*ndjson_chunks(["so far"], done=False), b'{"error":"model runner has unexpectedly stopped"}\n'],
        ),
    )
    service = await serve(
        running,
        providers={"local": OpenAIConfig(base_url=second.base_url), "laptop": OllamaConfig(base_url=upstream.root_url)},
    )
    missing = await client.post(f"{service.url}/chat", json={"message": "x", "model": "laptop/missing"})
    assert missing.status_code == 404
    assert missing.json()["code"] == "model_not_found"
    assert "try pulling it first" in missing.json()["detail"]

    async with client.stream("POST", f"{service.url}/chat", json={"message": "x", "model": "laptop/oom"}) as r:
        lines = await read_lines(r)
    assert text_of(lines) == "so far"
    assert lines[-1]["error"]["code"] == "upstream_unavailable"
    assert "model runner has unexpectedly stopped" in lines[-1]["error"]["message"]

    # Ollama lists "mistral:latest"; a chat for "mistral" (no tag) is routed there too.
    models = (await client.get(f"{service.url}/models")).json()
    assert "laptop/mistral:latest" in [e["id"] for e in models["data"]]
    async with client.stream("POST", f"{service.url}/chat", json={"message": "x", "model": "mistral"}) as r:
        lines = await read_lines(r)
    assert lines[0]["meta"] == {"model": "mistral", "role": "assistant", "provider": "laptop"}
    assert listings(upstream, "/api/tags") == 1


# --- what the model list teaches the OpenAI kind -------------------------------------------------------


async def test_a_listed_context_window_makes_an_empty_answer_to_a_long_prompt_not_retryable(
    upstream: FakeUpstream, running: list[LiveService], client: httpx.AsyncClient
) -> None:
    upstream.route("GET", "/v1/models", Reply.json({"object": "list", "data": [{"id": "small", "max_model_len": 512}]}))
    upstream.on("small", Reply(writes=[]))  # llama.cpp's answer to a prompt over its context: an empty 200
    service = await serve(running, providers={"local": OpenAIConfig(base_url=upstream.base_url)})
    body = {"message": "word " * 500, "model": "small"}

    async with client.stream("POST", f"{service.url}/chat", json=body) as r:
        before = (await read_lines(r))[-1]["error"]
    assert (await client.get(f"{service.url}/models")).status_code == 200
    async with client.stream("POST", f"{service.url}/chat", json=body) as r:
        after = (await read_lines(r))[-1]["error"]

    assert (before["code"], before["retryable"]) == ("stream_interrupted", True)  # the window was not known yet
    assert (after["code"], after["retryable"]) == ("upstream_rejected", False)
    assert "512 tokens" in after["message"]
