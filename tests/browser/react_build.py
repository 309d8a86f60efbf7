"""The React + Vite example (``examples/react-vite``), installed with ``npm ci`` and built once per test session.

The build happens in a copy (never the repository's own ``node_modules`` or ``dist``), with
``VITE_AGENT_URL`` naming the port the tests then start the service on, and is served by a
plain HTTP server on a free loopback port (:func:`react_site`). Without ``npm`` the tests that
need it are skipped, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import free_port
from tests.service_process import REPO_ROOT

__all__ = ("EXAMPLE", "ReactBuild", "react_build", "react_site")

EXAMPLE = REPO_ROOT / "examples" / "react-vite"
_SOURCES = ("package.json", "package-lock.json", "index.html", "vite.config.js", "src")
_NPM_SECONDS = 300


@dataclass(frozen=True)
class ReactBuild:
    dist: Path
    """The built site: ``index.html`` and ``assets/``."""
    service_port: int
    """The port the build's ``VITE_AGENT_URL`` points at, on 127.0.0.1."""


def _require_npm() -> str:
    npm = shutil.which("npm")
    if npm:
        return npm
    if os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}:
        pytest.fail("CI=true, but npm is not installed (.ci/run installs Node.js)", pytrace=False)
    pytest.skip("needs npm to build the React example")


def _run(npm: str, args: list[str], cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(
        [npm, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=_NPM_SECONDS, check=False
    )
    assert done.returncode == 0, f"npm {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="session")
def react_build(tmp_path_factory: pytest.TempPathFactory) -> ReactBuild:
    npm = _require_npm()
    work = tmp_path_factory.mktemp("react-vite")
    for name in _SOURCES:
        source = EXAMPLE / name
        if source.is_dir():
            shutil.copytree(source, work / name)
        else:
            shutil.copy2(source, work / name)
    port = free_port()
    env = {**os.environ, "VITE_AGENT_URL": f"http://127.0.0.1:{port}", "npm_config_update_notifier": "false"}
    _run(npm, ["ci", "--no-audit", "--no-fund"], work, env)
    _run(npm, ["run", "build"], work, env)
    return ReactBuild(dist=work / "dist", service_port=port)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # pytest shows the test's own output; a line per file would drown it


@pytest.fixture(scope="session")
def react_site(react_build: ReactBuild) -> Iterator[int]:
    """The build served over HTTP on 127.0.0.1, as ``vite preview`` would; yields the port."""
    handler = functools.partial(_Quiet, directory=str(react_build.dist))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="react-site", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
