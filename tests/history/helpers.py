"""Small helpers for the persistence tests: one chat, its lines, the stored conversation."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from tests.fake_upstream import sse_event


async def chat(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], principal: str | None = None
) -> tuple[int, list[dict[str, Any]], httpx.Response]:
    """POST /chat and read it to the end: status, the decoded lines (or the problem body), the response."""
    headers = {"X-Test-Principal": principal} if principal else {}
    response = await client.post(f"{url}/chat", json=body, headers=headers)
    if response.status_code != 200:
        return response.status_code, [response.json()], response
    return 200, [json.loads(line) for line in response.text.splitlines() if line], response


def meta_of(lines: list[dict[str, Any]]) -> dict[str, Any]:
    meta: dict[str, Any] = lines[0]["meta"]
    return meta


def text_of(lines: list[dict[str, Any]]) -> str:
    return "".join(line["delta"] for line in lines if "delta" in line)


async def conversation(
    client: httpx.AsyncClient, url: str, conversation_id: str, principal: str | None = None
) -> dict[str, Any]:
    headers = {"X-Test-Principal": principal} if principal else {}
    response = await client.get(f"{url}/conversations/{conversation_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for_status(
    client: httpx.AsyncClient, url: str, conversation_id: str, status: str, within: float = 5.0
) -> dict[str, Any]:
    """Poll the conversation until its last message has ``status`` (bounded)."""
    deadline = time.monotonic() + within
    while True:
        body = await conversation(client, url, conversation_id)
        if body["messages"] and body["messages"][-1].get("status") == status:
            return body["messages"][-1]  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"last message never became {status!r}: {body['messages'][-1:]}")
        await asyncio.sleep(0.05)


def reasoning_event(text: str) -> bytes:
    return sse_event(
        {
            "id": "r",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "fake",
            "choices": [{"index": 0, "delta": {"reasoning_content": text}, "finish_reason": None}],
        }
    )
