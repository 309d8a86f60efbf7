"""The service as an operator runs it: its own process, configured by environment variables only.

Its output goes to a file (never a pipe nobody reads); it is stopped by its PID; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ("REPO_ROOT", "ServiceProcess", "clean_env", "free_port", "start_service_process")

REPO_ROOT = Path(__file__).resolve().parents[1]
START_SECONDS = 30.0
STOP_SECONDS = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _is_config_var(name: str) -> bool:
    upper = name.upper()
    return (
        upper.startswith(("AGENT_", "DYNACONF_", "LITESTAR_"))
        or upper.endswith("_FOR_DYNACONF")
        or upper in {"APP_ENV", "LOAD_DOTENV"}
    )


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any configuration variables, plus ``settings``."""
    env = {name: value for name, value in os.environ.items() if not _is_config_var(name)}
    env.update(settings)
    return env


@dataclass
class ServiceProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    async def wait(self, within: float = STOP_SECONDS) -> int:
        """Wait for the process to end; its exit status (kill it and fail if it takes longer)."""
        deadline = time.monotonic() + within
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"the service did not exit within {within:g} s:\n{self.output()[-3000:]}")
            await asyncio.sleep(0.02)
        return self.proc.returncode

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


async def start_service_process(
    log: Path, env: dict[str, str], *, argv: list[str] | None = None, port: int | None = None, cwd: Path | None = None
) -> ServiceProcess:
    """Start ``uvicorn app:create_app --factory`` (or ``argv``) in ``cwd`` and wait for ``/health``.

    The working directory defaults to the log's (the test's own): the service's default SQLite
    file lands there, and the checkout's own ``.env`` or ``.secrets.toml`` are not read.
    """
    port = port or free_port()
    command = argv or [sys.executable, "-m", "uvicorn", "app:create_app", "--factory", "--port", str(port)]
    with log.open("wb") as out:  # Popen returns at once; the wait for the service below is async
        proc = subprocess.Popen(  # noqa: ASYNC220
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd or log.parent, env=env
        )
    service = ServiceProcess(proc, port, log)
    deadline = time.monotonic() + START_SECONDS
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the service exited with {proc.returncode}:\n{service.output()[-3000:]}")
            try:
                if (await client.get(f"{service.url}/health")).status_code == 200:
                    return service
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                service.stop()
                tail = service.output()[-3000:]
                raise AssertionError(f"the service was not healthy within {START_SECONDS:g} s:\n{tail}")
            await asyncio.sleep(0.05)
