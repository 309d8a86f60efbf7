"""Chromium for the real-browser tests: Debian's package, driven by Playwright for Python.

Never a downloaded browser build: ``executable_path`` is the ``chromium`` on the ``PATH``.
Without it the browser tests are skipped, except under ``CI=true``, where they fail
(``.ci/run`` installs Debian's ``chromium`` with ``apt-get``). Use the fixture in a conftest::

    from tests.browser_support import browser  # noqa: F401 (a fixture)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser

__all__ = ("CHROMIUM_ARGS", "browser", "require_chromium")

#: Headless, and nothing that talks to the network by itself (this machine's network is closed).
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> str:
    """The ``chromium`` executable; skip without it, fail under ``CI=true``."""
    executable = shutil.which("chromium")
    if executable:
        return executable
    if os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}:
        pytest.fail("CI=true, but Debian's chromium is not installed (.ci/run installs it)", pytrace=False)
    pytest.skip("needs Debian's chromium (apt-get install chromium)")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium for one test (Playwright's async API: the test's loop serves the app meanwhile)."""
    executable = require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()
