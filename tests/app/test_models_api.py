"""``GET /models`` through the ASGI app with fake providers: the body, its OpenAPI entry, bare ids in /chat."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from app import create_app
from app.config import Settings
from providers import OpenAIConfig, UpstreamTimeout
from tests.fakes import FakeProvider, registry_of


def make_app(*providers: FakeProvider, **kwargs: Any) -> Litestar:
    settings = Settings(providers={p.name: OpenAIConfig(model=p.model) for p in providers})
    return create_app(settings, registry=registry_of(*providers, **kwargs))


@pytest.fixture
def providers() -> tuple[FakeProvider, FakeProvider]:
    return (
        FakeProvider(listed=["local-model", "qwen/qwen3-8b"]),
        FakeProvider(name="gpu", model="gpu-default", listed=["TheBloke/MyLocalModel"]),
    )


@pytest.fixture
def client(providers: tuple[FakeProvider, FakeProvider]) -> Iterator[TestClient[Litestar]]:
    with TestClient(make_app(*providers)) as c:
        yield c


def test_models_lists_every_provider(client: TestClient[Litestar]) -> None:
    response = client.get("/models")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "data": [
            {"id": "local/local-model", "provider": "local", "model": "local-model", "default": True},
            {"id": "local/qwen/qwen3-8b", "provider": "local", "model": "qwen/qwen3-8b", "default": False},
            {"id": "gpu/gpu-default", "provider": "gpu", "model": "gpu-default", "default": False},
            {"id": "gpu/TheBloke/MyLocalModel", "provider": "gpu", "model": "TheBloke/MyLocalModel", "default": False},
        ],
        "errors": [],
    }


def test_a_failing_provider_is_in_errors_and_the_list_is_still_200() -> None:
    down = FakeProvider(name="down", model="m", list_error=UpstreamTimeout("provider 'down' did not list in time"))
    with TestClient(make_app(FakeProvider(listed=["a"]), down)) as client:
        response = client.get("/models")
    assert response.status_code == 200
    body = response.json()
    assert [e["id"] for e in body["data"]] == ["local/local-model", "local/a", "down/m"]
    assert body["errors"] == [
        {"provider": "down", "code": "upstream_timeout", "message": "provider 'down' did not list in time"}
    ]


@pytest.mark.parametrize(
    ("model", "provider", "model_id"),
    [
        ("TheBloke/MyLocalModel", "gpu", "TheBloke/MyLocalModel"),
        ("gpu-default", "gpu", "gpu-default"),
        ("qwen/qwen3-8b", "local", "qwen/qwen3-8b"),
        ("not-listed", "local", "not-listed"),
    ],
)
def test_a_chat_with_a_bare_id_goes_where_the_lists_say(
    client: TestClient[Litestar], providers: tuple[FakeProvider, FakeProvider], model: str, provider: str, model_id: str
) -> None:
    response = client.post("/chat", json={"message": "x", "model": model})
    assert response.status_code == 200
    meta = json.loads(response.text.splitlines()[0])["meta"]
    assert (meta["provider"], meta["model"]) == (provider, model_id)
    local, gpu = providers
    assert (local.listings, gpu.listings) == (1, 1)


def test_an_ambiguous_bare_id_is_a_400_problem() -> None:
    local = FakeProvider()
    gpu = FakeProvider(name="gpu", listed=["same"])
    laptop = FakeProvider(name="laptop", listed=["same"])
    with TestClient(make_app(local, gpu, laptop)) as client:
        response = client.post("/chat", json={"message": "x", "model": "same"})
    assert response.status_code == 400
    problem = response.json()
    assert problem["code"] == "invalid_request"
    assert "gpu, laptop" in problem["detail"]
    assert gpu.calls == laptop.calls == local.calls == []


def test_openapi_documents_models(client: TestClient[Litestar]) -> None:
    document = client.get("/schema/openapi.json").json()
    operation = document["paths"]["/models"]["get"]
    assert operation["operationId"] == "listModels"
    assert "requestBody" not in operation
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    schemas = document["components"]["schemas"]
    model_list = schemas[ok["$ref"].rsplit("/", 1)[-1]]
    assert set(model_list["properties"]) == {"data", "errors"}
    assert set(model_list["required"]) == {"data", "errors"}
    entry = schemas[model_list["properties"]["data"]["items"]["$ref"].rsplit("/", 1)[-1]]
    assert set(entry["properties"]) == {"id", "provider", "model", "default"}
    error = schemas[model_list["properties"]["errors"]["items"]["$ref"].rsplit("/", 1)[-1]]
    assert set(error["properties"]) == {"provider", "code", "message"}
    assert "application/problem+json" in operation["responses"]["500"]["content"]
