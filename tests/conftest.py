"""Every test runs in a scratch working directory.

``Settings()`` stores conversations in ``./agent-backend.db`` (the documented default), so
a test run would otherwise leave a database in the checkout and share it with the next run.
Subprocesses started by tests pass their own ``cwd``; settings files are found from the
project root when the working directory has none.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _scratch_working_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(before)
