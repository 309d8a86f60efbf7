"""Proxy rules for upstream requests: loopback never through a proxy, other hosts as the environment says."""

from __future__ import annotations

import httpx
import pytest

from app.config import Settings
from providers import OpenAIConfig
from tests.fake_upstream import FakeUpstream
from tests.integration.conftest import NO_DATABASE, LiveService
from tests.service_process import free_port


async def _chat(base_url: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> httpx.Response:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    service = LiveService(
        Settings(providers={"local": OpenAIConfig(base_url=base_url, model="m")}, database=NO_DATABASE)
    )
    await service.start()
    try:
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            response = await client.post(f"{service.url}/chat", json={"message": "hi"})
            await response.aread()
            return response
    finally:
        await service.stop()


async def test_loopback_upstream_never_goes_through_the_proxy(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    response = await _chat(upstream.base_url, monkeypatch, HTTP_PROXY=dead_proxy, ALL_PROXY=dead_proxy)
    assert response.status_code == 200, response.text
    assert upstream.requests[-1].path == "/v1/chat/completions"


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "ALL_PROXY"])
async def test_other_hosts_go_through_the_proxy_the_environment_names(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    proxy = f"http://127.0.0.1:{upstream.port}"  # the fake answers proxied requests too
    response = await _chat("http://llm.example/v1", monkeypatch, **{variable: proxy})
    assert response.status_code == 200, response.text
    # A proxy gets the absolute URL as the request target.
    assert upstream.requests[-1].path == "http://llm.example/v1/chat/completions"
