"""The built React + Vite example streams from the service across origins, and only from an allowed one.

The build (``npm ci && npm run build``, once per session) is served by a plain HTTP server on a
free loopback port. Chromium resolves ``localhost:5173`` (Vite's dev server, the default
``cors_origins``) and ``localhost:5174`` (an origin that is not allowed) to that server
(``--host-resolver-rules``), so the page has exactly the origin a developer's page has without
taking port 5173 from anyone. The service runs on 127.0.0.1 with its default ``cors_origins``;
every request to it is a real cross-origin request that Chromium's CORS checks decide.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from tests.browser.pages import watch
from tests.browser.react_build import ReactBuild
from tests.browser.services import LiveFactory
from tests.browser_support import CHROMIUM_ARGS, require_chromium
from tests.fake_upstream import FakeUpstream, Reply, sse_chunks

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

ALLOWED = "http://localhost:5173"
REFUSED = "http://localhost:5174"
TIMEOUT_MS = 10_000


@pytest.fixture
async def site_browser(react_site: int) -> AsyncIterator[Browser]:
    """Chromium that finds both origins at the server of the build."""
    executable = require_chromium()
    from playwright.async_api import async_playwright

    rules = f"MAP localhost:5173 127.0.0.1:{react_site}, MAP localhost:5174 127.0.0.1:{react_site}"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=[*CHROMIUM_ARGS, f"--host-resolver-rules={rules}"]
        )
        try:
            yield launched
        finally:
            await launched.close()


async def open_example(browser: Browser, origin: str) -> Page:
    page = await (await browser.new_context()).new_page()
    response = await page.goto(origin + "/")
    assert response is not None and response.status == 200
    return page


async def test_the_built_example_streams_from_the_allowed_origin_and_stops(
    site_browser: Browser, live: LiveFactory, upstream: FakeUpstream, react_build: ReactBuild
) -> None:
    await live(port=react_build.service_port)
    tokens = ["Hello", " from", " React"]
    upstream.default = Reply.sse(tokens, delay=0.3)
    page = await open_example(site_browser, ALLOWED)
    seen = watch(page)
    await page.get_by_label("Message").fill("hi")
    await page.get_by_role("button", name="Send").click()
    answer = page.get_by_test_id("answer")
    await page.wait_for_function(
        "() => document.querySelector('[data-testid=answer]').textContent === 'Hello'", timeout=TIMEOUT_MS
    )
    assert upstream.requests[-1].finished_at is None  # shown piece by piece, not at the end
    await page.wait_for_selector("[data-testid=answer][data-status=done]", state="attached", timeout=TIMEOUT_MS)
    assert await answer.text_content() == "Hello from React"
    chat = upstream.requests[-1]
    assert chat.body["messages"][-1] == {"role": "user", "content": "hi"}

    upstream.default = Reply(writes=sse_chunks(["and on"], finish_reason=None, done=False), hold_open=True)
    await page.get_by_label("Message").fill("go on")
    await page.get_by_role("button", name="Send").click()
    await page.wait_for_function(
        "() => document.querySelector('[data-testid=answer]').textContent === 'and on'", timeout=TIMEOUT_MS
    )
    endless = upstream.requests[-1]
    await page.get_by_role("button", name="Stop").click()
    await asyncio.wait_for(endless.disconnected.wait(), 2.0)
    await page.wait_for_selector("[data-testid=answer][data-status=stopped]", state="attached", timeout=TIMEOUT_MS)
    assert seen.problems == []


async def test_the_same_build_from_an_origin_that_is_not_allowed_is_refused_by_the_browser(
    site_browser: Browser, live: LiveFactory, upstream: FakeUpstream, react_build: ReactBuild
) -> None:
    await live(port=react_build.service_port)
    page = await open_example(site_browser, REFUSED)
    seen = watch(page)
    await page.get_by_label("Message").fill("hi")
    await page.get_by_role("button", name="Send").click()
    await page.wait_for_selector("[data-testid=answer][data-status=error]", state="attached", timeout=TIMEOUT_MS)
    alert = await page.get_by_role("alert").text_content() or ""
    assert "Failed to fetch" in alert and f"is {REFUSED} in its cors_origins?" in alert
    # The preflight was refused, so the chat itself was never sent and the LLM was never asked.
    assert [r for r in upstream.requests if r.path.endswith("/chat/completions")] == []
    assert any("CORS" in message for message in seen.console_errors), seen.console_errors
