"""Request ids, metrics, readiness and log lines, through the ASGI app (CONTRACT §5, §10)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from app import create_app
from app.config import Settings
from app.ops.logs import JSONFormatter, TextFormatter, logging_config
from app.ops.shutdown import Shutdown
from app.sections import LoggingSettings
from providers import DeltaEvent, DoneEvent, UpstreamUnavailable
from tests.fakes import FakeProvider, registry_of


@pytest.fixture
def fake() -> FakeProvider:
    return FakeProvider([[DeltaEvent("a"), DeltaEvent("b")], [DeltaEvent("c"), DoneEvent(True, "stop")]])


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[TestClient[Litestar]]:
    with TestClient(create_app(Settings(), registry=registry_of(fake))) as c:
        yield c


# --- X-Request-ID ---------------------------------------------------------------------------------


def test_an_incoming_request_id_is_kept(client: TestClient[Litestar]) -> None:
    for response in (
        client.post("/chat", json={"message": "x"}, headers={"x-request-id": "abc-123"}),
        client.post("/chat", json={}, headers={"x-request-id": "abc-123"}),  # a problem response
        client.get("/nope", headers={"x-request-id": "abc-123"}),
        client.get("/health", headers={"x-request-id": "abc-123"}),
    ):
        assert response.headers["x-request-id"] == "abc-123"


@pytest.mark.parametrize("incoming", [None, "", "has space", "x" * 129, "tab\there", "ünïcode".encode()])
def test_a_missing_or_invalid_request_id_is_replaced(
    client: TestClient[Litestar], incoming: str | bytes | None
) -> None:
    headers = {} if incoming is None else {"x-request-id": incoming}
    first = client.get("/health", headers=headers).headers["x-request-id"]
    second = client.get("/health", headers=headers).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


def test_a_refused_preflight_and_a_websocket_carry_the_id_too(client: TestClient[Litestar]) -> None:
    refused = client.options(
        "/chat",
        headers={"origin": "http://evil.example", "access-control-request-method": "POST", "x-request-id": "pre"},
    )
    assert refused.status_code == 400
    assert refused.headers["x-request-id"] == "pre"
    with client.websocket_connect("/chat/ws", headers={"x-request-id": "sock"}) as ws:
        assert dict(ws.scope["headers"])[b"x-request-id"] == b"sock"


# --- /metrics -------------------------------------------------------------------------------------


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus' text format (0 when it is not there yet)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series.startswith(name + "{") and all(f"{part}" in series for part in wanted.split(",")):
            return float(value)
        if series == name and not labels:
            return float(value)
    return 0.0


def test_metrics_count_requests_by_route_template_and_streams_per_batch(client: TestClient[Litestar]) -> None:
    before = client.get("/metrics").text
    for _ in range(3):
        client.post("/chat", json={"message": "x"})
    client.post("/chat", json={"message": ""})
    after = client.get("/metrics")
    assert after.status_code == 200
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text

    def grew(name: str, **labels: str) -> float:
        return sample(text, name, **labels) - sample(before, name, **labels)

    assert grew("agent_backend_requests_total", route="/chat", status_code="200", method="POST") == 3
    assert grew("agent_backend_requests_total", route="/chat", status_code="400", method="POST") == 1
    assert grew("agent_backend_deltas_total", provider="local") == 9
    assert grew("agent_backend_streams_total", provider="local", outcome="complete") == 3
    assert grew("agent_backend_time_to_first_delta_seconds_count", provider="local") == 3
    assert grew("agent_backend_stream_duration_seconds_count", provider="local") == 3
    assert sample(text, "agent_backend_streams_open", provider="local") == 0
    assert 'route="/chat"' in text and 'route="/chat?' not in text


def test_outcomes_and_cancellations_by_code() -> None:
    failing = FakeProvider([[DeltaEvent("a")]], fail_after=UpstreamUnavailable("gone"), name="flaky")
    refusing = FakeProvider(error=UpstreamUnavailable("down"), name="down")
    app = create_app(Settings(), registry=registry_of(FakeProvider(), failing, refusing))
    with TestClient(app) as client:
        before = client.get("/metrics").text
        client.post("/chat", json={"message": "x", "model": "flaky/m"})
        client.post("/chat", json={"message": "x", "model": "down/m"})
        text = client.get("/metrics").text
    assert (
        sample(text, "agent_backend_streams_total", provider="flaky", outcome="upstream_unavailable")
        - sample(before, "agent_backend_streams_total", provider="flaky", outcome="upstream_unavailable")
        == 1
    )
    assert (
        sample(text, "agent_backend_streams_total", provider="down", outcome="upstream_unavailable")
        - sample(before, "agent_backend_streams_total", provider="down", outcome="upstream_unavailable")
        == 1
    )


# --- /ready ---------------------------------------------------------------------------------------


def test_ready_reports_its_checks(client: TestClient[Litestar]) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] in ("ok", "disabled")
    assert body["checks"]["redis"] == "disabled"
    assert isinstance(body["checks"]["providers"], dict)


def test_ready_is_503_once_shutdown_has_begun(client: TestClient[Litestar]) -> None:
    shutdown: Shutdown = client.app.state.shutdown
    with client.portal() as portal:
        portal.call(_begin, shutdown)
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["status"] == "not_ready"
    assert client.get("/health").status_code == 200  # alive, just not taking new work


async def _begin(shutdown: Shutdown) -> None:
    shutdown.begin()


def test_a_failing_check_is_503_and_says_why(client: TestClient[Litestar]) -> None:
    async def down() -> str:
        raise ConnectionRefusedError("no")

    client.app.state.readiness.add("redis", down)
    body = client.get("/ready")
    assert body.status_code == 503
    assert body.json()["checks"]["redis"] == "check failed (ConnectionRefusedError)"


def test_openapi_documents_ready_and_metrics(client: TestClient[Litestar]) -> None:
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert "/ready" in paths
    assert "/metrics" in paths


# --- log lines ------------------------------------------------------------------------------------


def record(**fields: object) -> logging.LogRecord:
    rec = logging.LogRecord("app.streams", logging.INFO, __file__, 1, "stream end", (), None)
    rec.fields = fields  # type: ignore[attr-defined]
    rec.request_id = "rid-1"  # type: ignore[attr-defined]
    return rec


def test_json_lines_carry_the_fields() -> None:
    line = json.loads(JSONFormatter().format(record(provider="local", deltas=3, ttfd_ms=1.5)))
    assert line["request_id"] == "rid-1"
    assert line["message"] == "stream end"
    assert (line["provider"], line["deltas"], line["ttfd_ms"]) == ("local", 3, 1.5)
    assert line["level"] == "info"
    assert line["ts"].endswith("Z")


def test_text_lines_are_key_value() -> None:
    text = TextFormatter().format(record(provider="local", deltas=3))
    assert "[rid-1] stream end provider=local deltas=3" in text


@pytest.mark.parametrize(
    ("env", "configured", "expected"),
    [("production", None, "json"), ("development", None, "text"), ("testing", "json", "json")],
)
def test_log_format_by_environment(env: str, configured: str | None, expected: str) -> None:
    from app.factory import _log_format

    settings = Settings(env=env, logging=LoggingSettings(format=configured))  # type: ignore[arg-type]
    assert _log_format(settings) == expected
    formatter = logging_config("info", expected).formatters["agent"]["()"]
    assert formatter is (JSONFormatter if expected == "json" else TextFormatter)
