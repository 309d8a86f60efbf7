"""Every route the app has, discovered from ``app.routes``, with no, wrong and right credentials (CONTRACT §7).

A route added later is checked without anyone listing it here: it needs credentials unless it
is one of the contract's open routes, which this file names on its own (not from the middleware).
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from argon2 import PasswordHasher
from litestar import Litestar
from litestar.routes import HTTPRoute, WebSocketRoute
from litestar.testing import TestClient
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from app import create_app
from app.auth import WS_SUBPROTOCOL, Authenticator, key_hash, new_api_key
from app.config import Settings, load_settings
from app.principal import Principal
from app.sections import AuthSettings, MetricsSettings
from tests.auth.test_websocket_auth import whoami
from tests.fakes import FakeProvider, registry_of
from tests.integration.conftest import LiveService
from tests.service_process import REPO_ROOT, clean_env

KEY: Final = new_api_key()
USER, PASSWORD = "bob", "correct horse battery staple"
PASSWORD_HASH: Final = PasswordHasher().hash(PASSWORD)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


RIGHT: Final = {
    "bearer": {"Authorization": f"Bearer {KEY}"},
    "x-api-key": {"X-API-Key": KEY},
    "basic": {"Authorization": basic(USER, PASSWORD)},
}
WRONG: Final = {
    "bearer": {"Authorization": f"Bearer {KEY[:-1]}x"},
    "x-api-key": {"X-API-Key": new_api_key()},
    "basic-password": {"Authorization": basic(USER, PASSWORD + "!")},
    "basic-user": {"Authorization": basic("mallory", PASSWORD)},
    "basic-malformed": {"Authorization": "Basic not-base64!"},
    "other-scheme": {"Authorization": f"Token {KEY}"},
    "hash-as-key": {"X-API-Key": key_hash(KEY)},
}


def is_open(method: str, path: str, public_docs: bool) -> bool:
    """The contract's open routes (§5, §7, §10): health, readiness, docs when public, the playground's
    files, and /metrics while ``metrics.public`` (its default)."""
    if path in ("/health", "/ready", "/", "/metrics") or path.startswith("/playground/"):
        return True
    return public_docs and (path == "/schema" or path.startswith("/schema/"))


def secured_settings(*, public_docs: bool = True) -> Settings:
    return Settings(
        auth=AuthSettings(
            enabled=True,
            api_keys={"alice": key_hash(KEY)},
            username=USER,
            password=PASSWORD_HASH,
            public_docs=public_docs,
        )
    )


def secured_app(*, public_docs: bool = True) -> Litestar:
    return create_app(secured_settings(public_docs=public_docs), registry=registry_of(FakeProvider()))


_SAMPLES: Final[dict[type, str]] = {uuid.UUID: str(uuid.UUID(int=7)), int: "1", Path: "swagger-ui.css"}


def concrete(route: HTTPRoute | WebSocketRoute) -> str:
    path = route.path
    for name, definition in route.path_parameters.items():
        path = path.replace("{" + definition.full + "}", _SAMPLES.get(definition.type, "sample"))
        assert "{" + name not in path
    return path


def http_cases(app: Litestar) -> list[tuple[str, str]]:
    cases = [
        (method, concrete(route))
        for route in app.routes
        if isinstance(route, HTTPRoute)
        for method in sorted(route.methods)
        if method != "OPTIONS"  # CORS preflights are open; checked on their own below
    ]
    assert ("POST", "/chat") in cases and ("GET", "/health") in cases
    return cases


CASES: Final = http_cases(secured_app())


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient[Litestar]]:
    with TestClient(secured_app()) as c:
        yield c


def send(client: TestClient[Litestar], method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    body: dict[str, Any] = {"json": {"message": "hi"}} if method in ("POST", "PATCH", "PUT") else {}
    return client.request(method, path, headers=headers, **body)


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    if response.request.method != "HEAD":  # a HEAD answer has no body
        assert response.json()["code"] == "unauthorized"
    challenges = response.headers["www-authenticate"]
    assert challenges.startswith('Bearer realm="agent-backend"')
    assert 'Basic realm="agent-backend"' in challenges  # Basic is configured, and this is not a script's fetch


@pytest.mark.parametrize(("method", "path"), CASES)
def test_no_credentials(client: TestClient[Litestar], method: str, path: str) -> None:
    response = send(client, method, path, {})
    if is_open(method, path, public_docs=True):
        assert response.status_code not in (401, 403, 500), response.text
    else:
        assert_unauthorized(response)


@pytest.mark.parametrize("wrong", sorted(WRONG))
@pytest.mark.parametrize(("method", "path"), CASES)
def test_wrong_credentials(client: TestClient[Litestar], method: str, path: str, wrong: str) -> None:
    response = send(client, method, path, WRONG[wrong])
    if is_open(method, path, public_docs=True):
        assert response.status_code not in (401, 403, 500), response.text
    else:
        assert_unauthorized(response)
        # Missing and wrong look the same, to the byte.
        assert response.content == send(client, method, path, {}).content


@pytest.mark.parametrize("right", sorted(RIGHT))
@pytest.mark.parametrize(("method", "path"), CASES)
def test_right_credentials(client: TestClient[Litestar], method: str, path: str, right: str) -> None:
    response = send(client, method, path, RIGHT[right])
    assert response.status_code not in (401, 403, 500), response.text


def test_a_right_key_is_answered_as_its_principal(client: TestClient[Litestar]) -> None:
    response = client.post("/chat", json={"message": "hi"}, headers=RIGHT["bearer"])
    assert response.status_code == 200
    assert response.text.splitlines()[-1] == '{"done":true,"finish_reason":"stop"}'


def test_docs_need_credentials_when_not_public() -> None:
    app = secured_app(public_docs=False)
    cases = http_cases(app)
    docs = [(method, path) for method, path in cases if path.startswith("/schema")]
    assert len(docs) >= 4
    with TestClient(app) as client:
        for method, path in docs:
            assert_unauthorized(send(client, method, path, {}))
            assert send(client, method, path, RIGHT["x-api-key"]).status_code not in (401, 403, 500)
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize("headers", [{}, RIGHT["bearer"], WRONG["bearer"]], ids=["none", "right", "wrong"])
@pytest.mark.parametrize("path", ["/nope", "/chat/nope", "/health/x", "/schemax"])
def test_unknown_paths_are_404_whatever_the_credentials(
    client: TestClient[Litestar], path: str, headers: dict[str, str]
) -> None:
    response = client.get(path, headers=headers)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_cors_preflight_is_open(client: TestClient[Litestar]) -> None:
    response = client.options(
        "/chat",
        headers={
            "Origin": "http://localhost:5173",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, x-api-key, content-type",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "http://localhost:5173"


def test_a_401_to_a_cross_origin_fetch_carries_cors_headers(client: TestClient[Litestar]) -> None:
    response = client.post("/chat", json={"message": "hi"}, headers={"Origin": "http://localhost:5173"})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == "http://localhost:5173"


@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Mode": "cors"}, {"Sec-Fetch-Mode": "same-origin"}, {"X-Requested-With": "XMLHttpRequest"}],
    ids=["cors-fetch", "same-origin-fetch", "xhr"],
)
def test_a_scripts_request_never_gets_a_basic_challenge(client: TestClient[Litestar], headers: dict[str, str]) -> None:
    """A Basic challenge makes browsers show their own login dialog, also for fetch() (CONTRACT §11)."""
    response = client.post("/chat", json={"message": "hi"}, headers={**headers, **WRONG["basic-password"]})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="agent-backend"'


def test_a_page_load_gets_the_basic_challenge(client: TestClient[Litestar]) -> None:
    response = client.get("/schema/openapi.json", headers={"Sec-Fetch-Mode": "navigate"})
    assert response.status_code == 200  # open; a protected page:
    response = client.post("/chat", json={"message": "hi"}, headers={"Sec-Fetch-Mode": "navigate"})
    assert "Basic" in response.headers["www-authenticate"]


def test_without_basic_only_bearer_is_offered() -> None:
    settings = Settings(auth=AuthSettings(enabled=True, api_keys={"alice": key_hash(KEY)}))
    with TestClient(create_app(settings, registry=registry_of(FakeProvider()))) as client:
        response = client.post("/chat", json={"message": "hi"})
        assert response.headers["www-authenticate"] == 'Bearer realm="agent-backend"'
        # Basic is not configured, so even the right-looking Basic header is a wrong credential.
        assert client.post("/chat", json={"message": "hi"}, headers=RIGHT["basic"]).status_code == 401


def test_key_names_are_case_insensitive() -> None:
    settings = Settings(auth=AuthSettings(enabled=True, api_keys={"Alice": key_hash(KEY)}))
    assert Authenticator(settings.auth).check_key(KEY) == Principal("alice", "api_key")
    with TestClient(create_app(settings, registry=registry_of(FakeProvider()))) as client:
        assert client.post("/chat", json={"message": "hi"}, headers=RIGHT["bearer"]).status_code == 200


def test_plain_text_password() -> None:
    settings = Settings(auth=AuthSettings(enabled=True, username=USER, password="plain-secret"))
    with TestClient(create_app(settings, registry=registry_of(FakeProvider()))) as client:
        ok = client.post("/chat", json={"message": "hi"}, headers={"Authorization": basic(USER, "plain-secret")})
        assert ok.status_code == 200
        bad = client.post("/chat", json={"message": "hi"}, headers={"Authorization": basic(USER, "plain-secreT")})
        assert bad.status_code == 401


def test_auth_off_everyone_is_anonymous_and_nothing_is_checked() -> None:
    with TestClient(create_app(Settings(), registry=registry_of(FakeProvider()))) as client:
        assert client.post("/chat", json={"message": "hi"}).status_code == 200
        assert client.post("/chat", json={"message": "hi"}, headers=WRONG["bearer"]).status_code == 200


async def test_every_websocket_route_needs_credentials() -> None:
    """Each WebSocket route of the app (and a tiny one declared like ``/chat/ws``), over a real socket."""
    service = LiveService(secured_settings())
    service.app.register(whoami)
    routes = [route for route in service.app.routes if isinstance(route, WebSocketRoute)]
    assert any(route.path == "/test/ws" for route in routes)
    await service.start()
    try:
        for route in routes:
            url = f"ws://127.0.0.1:{service.port}{concrete(route)}"
            for offered in ([WS_SUBPROTOCOL], [WS_SUBPROTOCOL, "bearer.agb_wrong"]):
                with pytest.raises(InvalidStatus) as info:
                    async with connect(url, proxy=None, subprotocols=offered, open_timeout=5):  # type: ignore[arg-type]
                        pass
                assert info.value.response.status_code == 401, route.path
            async with connect(
                url,
                proxy=None,
                subprotocols=[WS_SUBPROTOCOL, f"bearer.{KEY}"],  # type: ignore[list-item]
                origin="http://localhost:5173",  # type: ignore[arg-type]
                open_timeout=5,
            ) as ws:
                assert ws.subprotocol == WS_SUBPROTOCOL, route.path
    finally:
        await service.stop()


def test_keys_create_prints_a_key_that_works(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "litestar", "keys", "create", "Carol"],
        cwd=REPO_ROOT,
        env=clean_env(APP_ENV="testing"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    keys = re.findall(r"^agb_[A-Za-z0-9_-]{43}$", result.stdout, re.MULTILINE)
    assert len(keys) == 1, result.stdout
    key = keys[0]
    assert len(base64.urlsafe_b64decode(key[4:] + "=")) == 32
    lines = re.findall(r'^auth\.api_keys\.carol = "sha256:[0-9a-f]{64}"$', result.stdout, re.MULTILINE)
    assert len(lines) == 1, result.stdout
    # The line, pasted into a settings file as the output says, makes the key work.
    (tmp_path / "settings.toml").write_text(f"[default]\nauth.enabled = true\n{lines[0]}\n", "utf-8")
    settings = load_settings(tmp_path)
    assert settings.auth.api_keys == {"carol": key_hash(key)}
    with TestClient(create_app(settings, registry=registry_of(FakeProvider()))) as client:
        assert client.post("/chat", json={"message": "hi"}, headers={"X-API-Key": key}).status_code == 200
        assert client.post("/chat", json={"message": "hi"}).status_code == 401
    # Each run makes a new key.
    again = subprocess.run(
        [sys.executable, "-m", "litestar", "keys", "create", "carol"],
        cwd=REPO_ROOT,
        env=clean_env(APP_ENV="testing"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert key not in again.stdout


def test_keys_create_works_without_loading_the_app(tmp_path: Path) -> None:
    """The first key of a production configuration, which refuses to load without one."""
    env = clean_env(APP_ENV="production")
    assert (
        subprocess.run(
            [sys.executable, "-c", "import app; app.create_app()"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        ).returncode
        != 0
    )
    result = subprocess.run(
        [sys.executable, "-m", "app.auth.cli", "create", "ops"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = re.findall(r"^agb_[A-Za-z0-9_-]{43}$", result.stdout, re.MULTILINE)[0]
    assert f'auth.api_keys.ops = "{key_hash(key)}"' in result.stdout


def test_keys_create_refuses_a_bad_name() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "litestar", "keys", "create", "no spaces"],
        cwd=REPO_ROOT,
        env=clean_env(APP_ENV="testing"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "agb_" not in result.stdout


async def test_every_websocket_route_refuses_a_foreign_origin_with_auth_off() -> None:
    """CORS does not protect WebSockets: each route declares ``WebSocketHandshake`` (auth off, no middleware)."""
    service = LiveService(Settings())
    service.app.register(whoami)
    routes = [route for route in service.app.routes if isinstance(route, WebSocketRoute)]
    await service.start()
    try:
        for route in routes:
            url = f"ws://127.0.0.1:{service.port}{concrete(route)}"
            with pytest.raises(InvalidStatus) as info:
                async with connect(
                    url,
                    proxy=None,
                    origin="http://evil.example",  # type: ignore[arg-type]
                    subprotocols=[WS_SUBPROTOCOL],  # type: ignore[list-item]
                    open_timeout=5,
                ):
                    pass
            assert info.value.response.status_code == 403, route.path
    finally:
        await service.stop()


def test_metrics_need_credentials_when_not_public() -> None:
    settings = secured_settings()
    settings = Settings(auth=settings.auth, metrics=MetricsSettings(public=False))
    with TestClient(create_app(settings, registry=registry_of(FakeProvider()))) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    with TestClient(secured_app()) as client:  # public, the default: open like /health
        assert client.get("/metrics").status_code == 200
