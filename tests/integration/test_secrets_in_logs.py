"""No API key, header secret or client credential in any log line, at any level (CONTRACT §3).

The service runs as its own process with every logger at its most verbose (uvicorn ``trace``,
ours ``debug``), the upstream echoes the key back in every way real servers do, and the whole
captured output is searched.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from tests.fake_upstream import FakeUpstream, Reply, sse_chunks, sse_event
from tests.service_process import clean_env, free_port, start_service_process

API_KEY = "sk-live-0123456789abcdefXYZ"
HEADER_SECRET = "hdr-secret-4f2b9c1e77"
CLIENT_SECRET = "agb_client-credential-never-logged"


async def test_no_secret_in_any_log_line(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.on("echo-401", Reply.json({"error": {"message": f"invalid api key {API_KEY}"}}, 401))
    upstream.on("echo-500", Reply.json({"error": f"got Authorization: Bearer {API_KEY} and {HEADER_SECRET}"}, 500))
    upstream.on("echo-404", Reply.json({"error": {"message": f"no model for key {API_KEY[:12]}..."}}, 404))
    upstream.on(
        "echo-stream",
        Reply(
            writes=[
                *sse_chunks(["a"], finish_reason=None, done=False),
                sse_event({"error": {"message": f"key {API_KEY} revoked", "code": 401}}),
            ]
        ),
    )
    upstream.on("echo-bad-json", Reply(writes=[b"data: {" + API_KEY.encode() + b"\n\n"]))
    env = clean_env(
        APP_ENV="testing",
        AGENT_LOG_LEVEL="debug",
        AGENT_DATABASE__ENABLED="false",
        AGENT_PROVIDERS__LOCAL__BASE_URL=upstream.base_url,
        AGENT_PROVIDERS__LOCAL__API_KEY=API_KEY,
        AGENT_PROVIDERS__LOCAL__EXTRA_HEADERS=f'{{"X-Upstream-Token" = "{HEADER_SECRET}"}}',
        AGENT_PROVIDERS__DEAD__BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
        AGENT_PROVIDERS__DEAD__API_KEY=API_KEY,
    )
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "app:create_app", "--factory", "--port", str(port), "--log-level", "trace"]
    service = await start_service_process(tmp_path / "service.log", env, argv=argv, port=port)
    bodies: list[str] = []
    try:
        async with httpx.AsyncClient(timeout=10, headers={"Authorization": f"Bearer {CLIENT_SECRET}"}) as client:
            for model in ("echo-401", "echo-500", "echo-404", "echo-stream", "echo-bad-json", "dead/x", "fake"):
                response = await client.post(f"{service.url}/chat", json={"message": "hi", "model": model})
                bodies.append(response.text)
            bodies.append((await client.post(f"{service.url}/chat", content=b"{broken")).text)
    finally:
        service.stop()
    output = service.output()
    assert "TRACE" in output or "ASGI [" in output, "uvicorn was not at its most verbose"
    assert upstream.requests[0].headers["authorization"] == f"Bearer {API_KEY}"  # the key did go upstream
    assert upstream.requests[0].headers["x-upstream-token"] == HEADER_SECRET
    for secret in (API_KEY, API_KEY[:12], HEADER_SECRET, CLIENT_SECRET):
        assert secret not in output, f"{secret!r} appears in the service's log"
        for body in bodies:
            assert secret not in body, f"{secret!r} appears in a response: {body[:300]}"
