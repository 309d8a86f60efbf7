"""Start-up as an operator does it (CONTRACT §1, §2): real processes, configured by AGENT_* only.

``litestar run`` (no flags) runs from the repository root, where app autodiscovery looks;
``python -m app`` and ``agent-backend`` run from an empty directory holding a copy of the
project's ``settings.toml``. Every wait is bounded and every process is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service_process import clean_env, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BOUND_SECONDS = 20.0

COMMANDS = {
    "litestar run": [str(BIN / "litestar"), "run"],
    "python -m app": [sys.executable, "-m", "app"],
    "agent-backend": [str(BIN / "agent-backend")],
}


def _cwd(command: str, tmp_path: Path) -> Path:
    if command == "litestar run":
        return REPO_ROOT  # autodiscovery finds the ``app`` package in the working directory
    shutil.copy(REPO_ROOT / "settings.toml", tmp_path / "settings.toml")
    return tmp_path


def _output(logs: Path) -> str:
    return "\n".join(f"--- {name} ---\n{(logs / name).read_text(errors='replace')}" for name in ("stdout", "stderr"))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _first_health(command: str, proc: subprocess.Popen[bytes], client: httpx.Client, logs: Path) -> httpx.Response:
    deadline = time.monotonic() + BOUND_SECONDS
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{command} exited with {proc.returncode}\n{_output(logs)}")
        try:
            return client.get("/health")
        except httpx.TransportError:
            if time.monotonic() > deadline:
                pytest.fail(f"{command}: nothing listening after {BOUND_SECONDS} s\n{_output(logs)}")
            time.sleep(0.1)


@contextlib.contextmanager
def _serving(command: str, tmp_path: Path) -> Iterator[tuple[httpx.Client, httpx.Response]]:
    """Start ``command`` on a free port; yield a client for it and its first ``/health`` answer."""
    port = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    with (logs / "stdout").open("wb") as out, (logs / "stderr").open("wb") as err:
        proc = subprocess.Popen(
            COMMANDS[command],
            cwd=_cwd(command, tmp_path),
            env=clean_env(
                AGENT_HOST="127.0.0.1",
                AGENT_PORT=str(port),
                AGENT_DATABASE__URL=f"sqlite+aiosqlite:///{tmp_path / 'agent-backend.db'}",
            ),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        try:
            # trust_env=False: no HTTP(S)_PROXY detour for loopback traffic.
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2, trust_env=False) as client:
                yield client, _first_health(command, proc, client, logs)
        finally:
            _stop(proc)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_starts_on_the_configured_host_and_port(command: str, tmp_path: Path) -> None:
    with _serving(command, tmp_path) as (_, health):
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_bad_config_exits_with_one_line_and_no_traceback(command: str, tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        COMMANDS[command],
        cwd=_cwd(command, tmp_path),
        env=clean_env(AGENT_HOST="127.0.0.1", AGENT_PORT="abc"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=BOUND_SECONDS,
        check=False,
    )
    elapsed = time.monotonic() - started
    stdout = done.stdout.decode(errors="replace")
    stderr = done.stderr.decode(errors="replace")
    report = f"exit {done.returncode} after {elapsed:.1f} s\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}"

    assert done.returncode != 0, report
    assert "Traceback" not in stdout + stderr, report
    assert len(stderr.strip().splitlines()) == 1, report
    assert "port (AGENT_PORT)" in stderr, report
    assert stdout.strip() == "", report


def test_openapi_documents_chat_as_ndjson(tmp_path: Path) -> None:
    with _serving("python -m app", tmp_path) as (client, _):
        response = client.get("/schema/openapi.json")

    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    ok = document["paths"]["/chat"]["post"]["responses"]["200"]
    assert "application/x-ndjson" in ok["content"]
    # The event schemas it names are in the document.
    schema = ok["content"]["application/x-ndjson"]["schema"]
    refs = [option["$ref"] for option in schema.get("oneOf", [schema]) if "$ref" in option]
    assert refs
    components = document["components"]["schemas"]
    for ref in refs:
        assert ref.removeprefix("#/components/schemas/") in components


def test_agent_backend_help_names_its_flags_and_serves_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [*COMMANDS["agent-backend"], "--help"],
        cwd=tmp_path,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=BOUND_SECONDS,
        check=False,
    )
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert out.startswith("usage: agent-backend")
    assert "--host" in out and "--port" in out and "AGENT_" in out


def test_agent_backend_port_flag_wins_over_the_environment(tmp_path: Path) -> None:
    port = free_port()
    shutil.copy(REPO_ROOT / "settings.toml", tmp_path / "settings.toml")
    with (tmp_path / "out").open("wb") as out:
        proc = subprocess.Popen(
            [*COMMANDS["agent-backend"], "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path,
            env=clean_env(AGENT_PORT="1", AGENT_DATABASE__ENABLED="false"),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2, trust_env=False) as client:
            deadline = time.monotonic() + BOUND_SECONDS
            while True:
                assert proc.poll() is None, (tmp_path / "out").read_text(errors="replace")
                try:
                    assert client.get("/health").status_code == 200
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, (tmp_path / "out").read_text(errors="replace")
                    time.sleep(0.1)
    finally:
        _stop(proc)
