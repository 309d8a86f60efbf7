"""The baseline for ``benchmarks/relay.py``: a straightforward, fairly written FastAPI relay.

What a competent developer writes first: one shared ``httpx.AsyncClient`` (created in the
lifespan, with a pool big enough for the benchmark's concurrency), ``client.stream(...)``,
``aiter_lines()``, ``json.loads`` per ``data:`` line and one ``json.dumps`` NDJSON line per
token through a ``StreamingResponse``. It speaks the same NDJSON as the contract (meta, delta
lines, one done or error line) but none of the contract's error handling.

Run (the benchmark does this)::

    BASELINE_UPSTREAM_BASE_URL=http://127.0.0.1:PORT/v1 \\
        python -m uvicorn benchmarks.fastapi_relay:app --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

__all__ = ("app",)

UPSTREAM = os.environ.get("BASELINE_UPSTREAM_BASE_URL", "http://localhost:1234/v1")
DEFAULT_MODEL = "local-model"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=30)
    timeout = httpx.Timeout(120, connect=5)
    async with httpx.AsyncClient(base_url=UPSTREAM, limits=limits, timeout=timeout) as client:
        app.state.client = client
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/chat")
async def chat(request: Request) -> StreamingResponse:
    body: dict[str, Any] = await request.json()
    model = body.get("model") or DEFAULT_MODEL
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": body["message"]}],
        "stream": True,
        "max_tokens": body.get("max_tokens", 512),
    }
    client: httpx.AsyncClient = request.app.state.client

    async def events() -> AsyncIterator[str]:
        finish_reason = None
        usage = None
        try:
            async with client.stream("POST", "/chat/completions", json=payload) as resp:
                yield json.dumps({"meta": {"model": model, "role": "assistant", "provider": "local"}}) + "\n"
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or ():
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            yield json.dumps({"delta": content}) + "\n"
                        if choice.get("finish_reason"):
                            finish_reason = choice["finish_reason"]
        except httpx.HTTPError as exc:
            error = {"code": "upstream_unavailable", "message": str(exc), "retryable": True}
            yield json.dumps({"error": error}) + "\n"
            return
        yield json.dumps({"done": True, "finish_reason": finish_reason, "usage": usage}) + "\n"

    return StreamingResponse(
        events(),
        media_type="application/x-ndjson",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
