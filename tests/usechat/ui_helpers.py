"""Reading a UI message stream response in tests: its parts, its text."""

from __future__ import annotations

import json
from typing import Any

import httpx


def ui_parts(response: httpx.Response) -> list[Any]:
    """Each ``data:`` event of a UI message stream, decoded; ``[DONE]`` as the string."""
    body = response.text
    assert body.endswith("\n\n"), body[-200:]
    out: list[Any] = []
    for event in body[:-2].split("\n\n"):
        assert event.startswith("data: "), event
        payload = event[len("data: ") :]
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def ui_text(parts: list[Any]) -> str:
    return "".join(p["delta"] for p in parts if isinstance(p, dict) and p["type"] == "text-delta")


def user(text: str, message_id: str = "u1") -> dict[str, Any]:
    return {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}


def assistant(text: str, message_id: str = "a1") -> dict[str, Any]:
    return {"id": message_id, "role": "assistant", "parts": [{"type": "step-start"}, {"type": "text", "text": text}]}
