"""Every error before a response starts is problem+json with the contract's code, Litestar's own included."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar, get
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    TooManyRequestsException,
)
from litestar.testing import TestClient, create_test_client

from app import create_app
from app.config import Settings
from app.errors import EXCEPTION_HANDLERS
from app.sections import DatabaseSettings
from tests.fakes import FakeProvider, registry_of


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"type", "title", "status", "detail", "code"}
    assert (body["status"], body["code"]) == (status, code)
    return body


@get("/not-authorized", sync_to_thread=False)
def not_authorized() -> None:
    raise NotAuthorizedException("no key", headers={"WWW-Authenticate": "Bearer"})


@get("/forbidden", sync_to_thread=False)
def forbidden() -> None:
    raise PermissionDeniedException("not yours")


@get("/too-many", sync_to_thread=False)
def too_many() -> None:
    raise TooManyRequestsException("slow down", headers={"Retry-After": "7"})


@get("/teapot", sync_to_thread=False)
def teapot() -> None:
    raise HTTPException("short and stout", status_code=418)


@get("/litestar-500", sync_to_thread=False)
def litestar_500() -> None:
    raise HTTPException("connection string postgres://u:pw@db", status_code=500)


@pytest.fixture
def litestar_errors() -> Iterator[TestClient[Litestar]]:
    handlers = [not_authorized, forbidden, too_many, teapot, litestar_500]
    with create_test_client(handlers, exception_handlers=EXCEPTION_HANDLERS) as client:  # type: ignore[arg-type]
        yield client


def test_litestar_401_is_unauthorized_with_its_challenge(litestar_errors: TestClient[Litestar]) -> None:
    response = litestar_errors.get("/not-authorized")
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


def test_litestar_403_is_unauthorized(litestar_errors: TestClient[Litestar]) -> None:
    assert_problem(litestar_errors.get("/forbidden"), 403, "unauthorized")


def test_litestar_429_is_rate_limited_with_retry_after(litestar_errors: TestClient[Litestar]) -> None:
    response = litestar_errors.get("/too-many")
    assert_problem(response, 429, "rate_limited")
    assert response.headers["retry-after"] == "7"


def test_other_4xx_keeps_its_status(litestar_errors: TestClient[Litestar]) -> None:
    assert_problem(litestar_errors.get("/teapot"), 418, "invalid_request")


def test_litestar_5xx_shows_no_internals(litestar_errors: TestClient[Litestar]) -> None:
    body = assert_problem(litestar_errors.get("/litestar-500"), 500, "internal_error")
    assert "postgres" not in body["detail"]


# --- CORS preflight ------------------------------------------------------------------------------


@pytest.fixture
def client() -> Iterator[TestClient[Litestar]]:
    with TestClient(
        create_app(Settings(database=DatabaseSettings(enabled=False)), registry=registry_of(FakeProvider()))
    ) as c:
        yield c


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({"origin": "http://evil.example", "access-control-request-method": "POST"}, "origin"),
        ({"origin": "http://localhost:5173", "access-control-request-method": "PUT"}, "method"),
        (
            {
                "origin": "http://localhost:5173",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type, x-secret-thing",
            },
            "x-secret-thing",
        ),
    ],
)
def test_refused_cors_preflight_is_problem_json(
    client: TestClient[Litestar], headers: dict[str, str], says: str
) -> None:
    body = assert_problem(client.options("/chat", headers=headers), 400, "invalid_request")
    assert says in body["detail"]


def test_allowed_cors_preflight_still_passes(client: TestClient[Litestar]) -> None:
    response = client.options(
        "/chat", headers={"origin": "http://localhost:5173", "access-control-request-method": "POST"}
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "http://localhost:5173"


# --- the docs page works offline ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/schema", "/schema/swagger"])
def test_docs_page_loads_nothing_from_outside(client: TestClient[Litestar], path: str) -> None:
    page = client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    assert len(references) >= 4  # script, preset, style sheet, icon
    for reference in references:
        assert reference.startswith("/"), f"{path} loads {reference} from outside the service"
        assert not reference.startswith("//"), reference
        asset = client.get(reference)
        assert asset.status_code == 200, reference
        assert len(asset.content) > 100, reference
    assert "http://" not in page.text.split("spec:")[0] and "https://" not in page.text.split("spec:")[0]
