"""Reading the error objects that real LLM servers send, in all their shapes.

Seen in the wild: ``{"error": {"message": …, "type": …, "code": 400}}`` (llama.cpp, vLLM),
``{"error": {"message": …, "code": "model_not_found"}}`` (OpenAI, LM Studio),
``{"error": "text"}`` (LM Studio, Ollama), ``{"detail": …}`` (FastAPI-based servers) and plain
text. From each we want the upstream's own message and the HTTP status it stands for.
"""

from __future__ import annotations

import msgspec

__all__ = ("clip", "decode_json", "describe_error_payload", "error_object_of", "message_of_body")

_MAX_MESSAGE = 2000

# Hints in an error's "type"/"code" (or message) that stand for an HTTP status.
_STATUS_HINTS: tuple[tuple[str, int], ...] = (
    ("not_found", 404),
    ("not found", 404),
    ("unexpected endpoint", 404),
    ("rate_limit", 429),
    ("rate limit", 429),
    ("overloaded", 503),
    ("unavailable", 503),
    ("timeout", 408),
    ("invalid_request", 400),
    ("badrequest", 400),
    ("bad_request", 400),
    ("context length", 400),
    ("context_length", 400),
    ("exceed_context", 400),
    ("server_error", 500),
    ("internal", 500),
    ("api_error", 500),
)


def _as_status(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 400 <= value <= 599:
        return value
    if isinstance(value, str) and value.isdigit() and 400 <= int(value) <= 599:
        return int(value)
    return None


def clip(text: str) -> str:
    """``text`` on one line and at most a couple of thousand characters (redact secrets first)."""
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def decode_json(body: bytes) -> object:
    """JSON from an upstream; bytes that are not UTF-8 JSON raise ``ValueError``."""
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)) from None


def error_object_of(raw: bytes) -> object | None:
    """The ``error`` of a line that failed to decode, if it is an error object all the same.

    An error object with a stray non-UTF-8 byte is still the upstream's error report.
    """
    try:
        payload = decode_json(raw.decode("utf-8", "replace").encode())
    except ValueError:
        return None
    return payload.get("error") if isinstance(payload, dict) else None


def describe_error_payload(payload: object, *, default_status: int) -> tuple[int, str]:
    """The status and message an upstream error object stands for.

    Args:
        payload: the value of ``error`` (an object or a string), or a whole error body.
        default_status: what to assume when nothing in the payload says.

    Returns:
        ``(status, message)``; the message is the upstream's own words, not yet redacted or clipped.
    """
    if isinstance(payload, dict):
        message = payload.get("message") or payload.get("detail") or payload.get("error")
        if isinstance(message, dict):
            return describe_error_payload(message, default_status=default_status)
        text = message if isinstance(message, str) else msgspec.json.encode(payload).decode()
        status = _as_status(payload.get("code")) or _as_status(payload.get("status"))
        if status is None:
            hints = " ".join(str(payload.get(key) or "") for key in ("code", "type"))
            status = _status_from_hint(hints) or _status_from_hint(text)
        return status or default_status, text or "no message"
    text = payload if isinstance(payload, str) else msgspec.json.encode(payload).decode()
    return _status_from_hint(text) or default_status, text or "no message"


def _status_from_hint(text: str) -> int | None:
    lowered = text.lower()
    for hint, status in _STATUS_HINTS:
        if hint in lowered:
            return status
    return None


def message_of_body(body: bytes) -> str:
    """The message in an HTTP error body: a JSON error object, or the text itself."""
    try:
        payload = decode_json(body)
    except ValueError:
        return body.decode("utf-8", "replace")
    if isinstance(payload, dict):
        inner = payload.get("error", payload)
        return describe_error_payload(inner, default_status=500)[1]
    return str(payload)
