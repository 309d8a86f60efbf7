"""The docs page in a real browser: it renders, and loads nothing from outside the service (CONTRACT §5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.integration.conftest import LiveService

if TYPE_CHECKING:
    from playwright.async_api import Browser, Request


async def test_the_docs_page_renders_and_asks_nothing_of_another_host(browser: Browser, service: LiveService) -> None:
    page = await browser.new_page()
    requested: list[str] = []

    def note(request: Request) -> None:
        requested.append(request.url)

    page.on("request", note)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{service.url}/schema")
    await page.wait_for_selector("text=/chat", timeout=15_000)  # Swagger UI lists the routes
    assert errors == []
    outside = [url for url in requested if not url.startswith(service.url)]
    assert outside == [], f"the docs page asked other hosts for {outside}"
    assert any(url.endswith("/schema/assets/swagger-ui-bundle.js") for url in requested)
