"""useChat in Chromium: a React page built by Vite shows deltas before the upstream finished; a reload re-attaches."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from app.config import Settings
from app.sections import DatabaseSettings, StreamsSettings
from providers import OpenAIConfig
from tests.browser_support import browser  # noqa: F401 (a fixture)
from tests.fake_upstream import FakeUpstream, Reply, sse_chunks
from tests.history.conftest import Serve
from tests.history.helpers import conversation
from tests.node_support import npm_ci, require_node, run_node

if TYPE_CHECKING:
    from playwright.async_api import Browser, Route

TOKENS = [f"w{n} " for n in range(40)]
WHOLE = "".join(TOKENS)


@pytest.fixture
async def page_dir(tmp_path: Path) -> Path:
    """The page (tests/node/page) built by Vite into the test's directory."""
    node, npm = require_node()
    npm_ci(npm)
    out = tmp_path / "page"
    await run_node(node, "node_modules/vite/bin/vite.js", "build", "page", "--outDir", str(out), "--emptyOutDir")
    assert (out / "index.html").exists()
    return out


async def test_use_chat_streams_deltas_and_a_reload_reattaches(
    browser: Browser,  # noqa: F811 (the fixture)
    page_dir: Path,
    serve: Serve,
    upstream: FakeUpstream,
    client: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    upstream.on("fake-model", Reply(writes=sse_chunks(TOKENS), delay=0.08))
    settings = Settings(
        providers={"local": OpenAIConfig(base_url=upstream.base_url, model="fake-model")},
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'agent-backend.db'}"),
        streams=StreamsSettings(resume=True),
    )
    service = await serve(settings)
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    async def from_build(route: Route) -> None:
        # The built page, served on the service's own origin (so /api/chat is same-origin, no CORS).
        path = route.request.url.split("/app/", 1)[1].split("?", 1)[0]
        file = page_dir / path
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        await route.fulfill(status=200, body=file.read_bytes(), content_type=content_type)

    await page.route(f"{service.url}/app/**", from_build)
    await page.goto(f"{service.url}/app/index.html?chat=in-the-browser")
    await page.wait_for_selector("#status:text('ready')", timeout=15_000)
    await page.fill("#prompt", "tell me a long story")
    await page.click("#send")

    # Deltas on screen while the upstream is still writing its answer.
    await page.wait_for_function("document.querySelector('#answer').textContent.length > 0", timeout=10_000)
    shown = await page.text_content("#answer")
    answering = upstream.requests[-1]
    assert answering.finished_at is None, "the upstream had finished before the first delta showed"
    assert shown and WHOLE.startswith(shown) and shown != WHOLE

    # A reload mid-answer: the page loads the stored messages and useChat({ resume: true }) re-attaches.
    await page.reload()
    await page.wait_for_function(
        f"document.querySelector('#answer') && document.querySelector('#answer').textContent === {WHOLE!r}",
        timeout=15_000,
    )
    await page.wait_for_selector("#status:text('ready')", timeout=5_000)
    items = await page.locator("#messages li").all_text_contents()
    assert items == ["tell me a long story", WHOLE]
    assert answering.disconnected_at is None  # the reload never stopped the generation
    assert len([r for r in upstream.requests if r.path.endswith("/chat/completions")]) == 1  # nor restarted it
    assert errors == []
    assert [url for url in requested if not url.startswith(service.url)] == []
    listed = (await client.get(f"{service.url}/api/chat/in-the-browser/messages")).json()
    stored = await conversation(client, service.url, listed[-1]["metadata"]["conversation_id"])
    assert stored["messages"][-1]["status"] == "complete" and stored["messages"][-1]["content"] == WHOLE
