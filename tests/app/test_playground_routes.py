"""The playground's routes (CONTRACT §11): the page and its files, their headers, on and off by environment."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from app import create_app
from app.config import Settings, load_settings
from app.playground import STATIC_DIRECTORY
from app.sections import DatabaseSettings, PlaygroundSettings
from providers.errors import AgentError
from tests.fakes import FakeProvider, registry_of

# clean_env: autouse, no AGENT_* or APP_ENV from the developer's shell reaches load_settings.
from tests.unit.test_config import PRODUCTION_KEY_HASH, REPO_ROOT, clean_env  # noqa: F401 (a fixture)

OFF_DATABASE = DatabaseSettings(enabled=False)


def app_with(playground: PlaygroundSettings) -> Litestar:
    settings = Settings(playground=playground, database=OFF_DATABASE)
    return create_app(settings, registry=registry_of(FakeProvider()))


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(REPO_ROOT / "settings.toml", tmp_path / "settings.toml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def client() -> Iterator[TestClient[Litestar]]:
    with TestClient(app_with(PlaygroundSettings())) as c:
        yield c


def test_the_page_is_served_at_the_root_with_a_same_origin_policy(client: TestClient[Litestar]) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"  # once, not twice
    assert response.headers["content-security-policy"].startswith("default-src 'self';")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.text == (STATIC_DIRECTORY / "index.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("app.js", "text/javascript"),
        ("api.js", "text/javascript"),
        ("errors.js", "text/javascript"),
        ("style.css", "text/css"),
    ],
)
def test_the_page_s_files_are_served_as_what_they_are(client: TestClient[Litestar], name: str, media_type: str) -> None:
    response = client.get(f"/playground/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == media_type
    assert response.content == (STATIC_DIRECTORY / name).read_bytes()


def test_the_page_names_only_files_that_exist_on_this_origin() -> None:
    page = (STATIC_DIRECTORY / "index.html").read_text(encoding="utf-8")
    assert "//" not in page  # no other host, not even a scheme-relative one
    for name in ("style.css", "app.js"):
        assert f'"/playground/{name}"' in page
    modules = (STATIC_DIRECTORY / "app.js").read_text(encoding="utf-8")
    assert "innerHTML" not in modules and "insertAdjacentHTML" not in modules  # model output is text only


def test_unknown_files_and_paths_outside_the_directory_are_404(client: TestClient[Litestar]) -> None:
    assert client.get("/playground/missing.js").status_code == 404
    assert client.get("/playground/../routes.py").status_code == 404
    assert client.get("/playground/%2e%2e/routes.py").status_code == 404


def test_the_playground_is_not_in_the_openapi_document(client: TestClient[Litestar]) -> None:
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert "/" not in paths and not any(path.startswith("/playground") for path in paths)


def test_disabled_the_root_and_the_files_are_404() -> None:
    with TestClient(app_with(PlaygroundSettings(enabled=False))) as c:
        response = c.get("/")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert c.get("/playground/app.js").status_code == 404


def test_on_in_development_and_testing_off_in_production(project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(project_dir).playground.enabled is True
    monkeypatch.setenv("APP_ENV", "testing")
    assert load_settings(project_dir).playground.enabled is True
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("AGENT_AUTH__API_KEYS__OPS", PRODUCTION_KEY_HASH)  # production needs a credential
    assert load_settings(project_dir).playground.enabled is False
    monkeypatch.setenv("AGENT_PLAYGROUND__ENABLED", "true")
    assert load_settings(project_dir).playground.enabled is True


def _error_classes() -> list[type[AgentError]]:
    found, todo = [], [AgentError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


CODES: Final = {cls.code: cls.retryable for cls in _error_classes()}
EXAMPLE_STREAM_CHAT: Final = REPO_ROOT / "examples" / "react-vite" / "src" / "streamChat.js"


def _retryable_set(script: str) -> set[str]:
    match = re.search(r"const RETRYABLE = new Set\(\[(.*?)\]\)", script, flags=re.S)
    assert match is not None
    return set(re.findall(r'"([a-z_]+)"', match.group(1)))


def test_every_error_code_of_the_contract_has_a_readable_message() -> None:
    assert len(CODES) >= 17  # the contract's table
    messages = (STATIC_DIRECTORY / "errors.js").read_text(encoding="utf-8")
    missing = [code for code in CODES if not re.search(rf"^\s+{code}: \"", messages, flags=re.M)]
    assert missing == []


@pytest.mark.parametrize("script", [STATIC_DIRECTORY / "api.js", EXAMPLE_STREAM_CHAT], ids=lambda p: p.name)
def test_the_clients_know_which_codes_are_retryable(script: Path) -> None:
    # A problem+json body does not say whether it is retryable; the clients read it off the code.
    assert _retryable_set(script.read_text(encoding="utf-8")) == {code for code, retry in CODES.items() if retry}
