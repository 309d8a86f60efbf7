"""Node for the tests that run a real JavaScript client (``tests/node``): found, its packages installed, run bounded.

Without ``node`` or ``npm`` those tests are skipped, except under ``CI=true``, where they fail
(``.ci/run`` installs Debian's ``nodejs``). ``npm ci`` installs exactly ``package-lock.json``
from the registry, and only when ``node_modules`` is missing or older than the lock file.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

import pytest

__all__ = ("NODE_PROJECT", "npm_ci", "require_node", "run_node")

NODE_PROJECT: Final = Path(__file__).resolve().parent / "node"
_NPM_CI_SECONDS: Final = 300.0


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require_node() -> tuple[str, str]:
    """``node`` and ``npm``; skip without them, fail under ``CI=true``."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node and npm:
        return node, npm
    if _ci():
        pytest.fail("CI=true, but node/npm is not installed (.ci/run installs nodejs)", pytrace=False)
    pytest.skip("needs Node.js and npm (apt-get install nodejs npm)")


def npm_ci(npm: str, project: Path = NODE_PROJECT) -> None:
    """Install the project's locked packages unless ``node_modules`` is already current."""
    lock = project / "package-lock.json"
    installed = project / "node_modules" / ".package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=_NPM_CI_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"npm ci failed in {project}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}", pytrace=False)


async def run_node(node: str, script: str, *args: str, within: float = 60.0, project: Path = NODE_PROJECT) -> str:
    """Run ``node script args…`` in ``project`` without blocking the loop (the service may be on it); its stdout.

    Fails the test on a non-zero exit or when it takes longer than ``within`` seconds (it is killed then).
    """
    proc = await asyncio.create_subprocess_exec(
        node, script, *args, cwd=project, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"node {script} did not finish within {within:g} s", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"node {script} exited with {proc.returncode}:\n{out.decode()[-3000:]}\n{err.decode()[-3000:]}")
    return out.decode()
