"""Real-browser tests: the app under uvicorn, pages loaded in Debian's Chromium."""

from __future__ import annotations

from tests.browser.react_build import react_build, react_site  # noqa: F401 (fixtures)
from tests.browser.services import live  # noqa: F401 (a fixture)
from tests.browser_support import browser  # noqa: F401 (a fixture)
from tests.integration.conftest import client, service, start_service, upstream  # noqa: F401 (fixtures)
