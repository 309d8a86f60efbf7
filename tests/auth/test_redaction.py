"""The filter that keeps credentials out of the server's own WebSocket debug lines."""

from __future__ import annotations

import logging

import pytest

from app.auth import SecretRedaction, install_log_redaction


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", logging.DEBUG, __file__, 1, message, args, None)


@pytest.mark.parametrize(
    ("message", "args", "expected"),
    [
        ("< %s: %s", ("authorization", "Bearer agb_secret"), "< authorization: ***"),
        ("< %s: %s", ("Authorization", "Basic Ym9iOnB3"), "< Authorization: ***"),
        ("< %s: %s", ("x-api-key", "agb_secret"), "< x-api-key: ***"),
        ("< %s: %s", ("sec-websocket-protocol", "agent-backend.v1, bearer.agb_secret"), None),
        ("scope=%r", ({"subprotocols": ["agent-backend.v1", "bearer.agb_secret"]},), None),
        ("< %s: %s", ("user-agent", "curl"), "< user-agent: curl"),
    ],
)
def test_credentials_are_replaced(message: str, args: tuple[object, ...], expected: str | None) -> None:
    entry = record(message, *args)
    assert SecretRedaction().filter(entry) is True  # never drops a line
    text = entry.getMessage()
    assert "agb_secret" not in text and "Ym9iOnB3" not in text
    if expected is not None:
        assert text == expected
    else:
        assert "bearer.***" in text and "agent-backend.v1" in text


def test_installed_once_on_the_servers_loggers() -> None:
    install_log_redaction()
    install_log_redaction()
    for name in ("uvicorn", "uvicorn.error", "uvicorn.asgi"):
        assert sum(isinstance(f, SecretRedaction) for f in logging.getLogger(name).filters) == 1
