"""The AI SDK's own client (``ai``'s DefaultChatTransport + AbstractChat, in Node) against the service under uvicorn."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.sections import DatabaseSettings, StreamsSettings
from providers import OpenAIConfig
from tests.fake_upstream import FakeUpstream, Reply, sse_chunks, sse_event
from tests.history.conftest import Serve
from tests.history.helpers import conversation, wait_for_status
from tests.node_support import npm_ci, require_node, run_node

_CHUNK = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "fake"}


def _delta(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return sse_event({**_CHUNK, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def _replies(upstream: FakeUpstream) -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    upstream.on("case-text", Reply(writes=sse_chunks(["Hello", " from", " Node"], usage=usage)))
    upstream.on(
        "case-reasoning",
        Reply(writes=[_delta({"reasoning_content": "think"}), _delta({"content": "answer"}), _delta({}, "stop")]),
    )
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    upstream.on(
        "case-tool",
        Reply(
            writes=[
                _delta({"tool_calls": [call]}),
                _delta({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":"Paris"}'}}]}),
                _delta({}, "tool_calls"),
            ]
        ),
    )
    upstream.on("case-error", Reply(writes=sse_chunks(["half"], finish_reason=None, done=False)))
    upstream.on("case-stop", Reply(writes=sse_chunks([f"t{n} " for n in range(400)]), delay=0.02))


@pytest.fixture
def node() -> str:
    node, npm = require_node()
    npm_ci(npm)
    return node


async def test_the_sdk_client_reads_every_kind_of_answer(
    node: str, serve: Serve, upstream: FakeUpstream, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    _replies(upstream)
    settings = Settings(
        providers={"local": OpenAIConfig(base_url=upstream.base_url, model="fake-model")},
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'agent-backend.db'}"),
    )
    service = await serve(settings)
    output = await run_node(node, "test.mjs", service.url, "text", "reasoning", "tool", "error", "stop")
    results = {line["case"]: line for line in map(json.loads, output.splitlines())}
    for name, result in results.items():
        assert "failure" not in result, f"{name}: {result.get('failure')}"

    def answer(name: str) -> dict[str, Any]:
        messages = results[name]["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"], messages
        return messages[1]  # type: ignore[no-any-return]

    text = answer("text")
    assert results["text"]["status"] == "ready" and results["text"]["error"] is None
    assert [p for p in text["parts"] if p["type"] == "text"] == [
        {"type": "text", "text": "Hello from Node", "state": "done"}
    ]
    assert text["metadata"]["model"] == "case-text" and text["metadata"]["provider"] == "local"
    # finish's messageMetadata merged into start's
    assert text["metadata"]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3}
    # The SDK took start.messageId: the stored message's id, in the stored conversation.
    stored = await conversation(client, service.url, text["metadata"]["conversation_id"])
    assert stored["messages"][1]["id"] == text["id"] and stored["messages"][1]["content"] == "Hello from Node"

    reasoning = answer("reasoning")
    kinds = [(p["type"], p.get("text"), p.get("state")) for p in reasoning["parts"] if p["type"] != "step-start"]
    assert kinds == [("reasoning", "think", "done"), ("text", "answer", "done")]

    tool = answer("tool")
    calls = [p for p in tool["parts"] if p["type"] == "dynamic-tool"]
    assert len(calls) == 1
    assert calls[0]["toolName"] == "get_weather" and calls[0]["toolCallId"] == "call_1"
    assert calls[0]["state"] == "input-available" and calls[0]["input"] == {"city": "Paris"}

    error = results["error"]
    assert error["status"] == "error" and error["error"]
    assert {"type": "data-error", "data": {"code": "stream_interrupted", "retryable": True}} in [
        {k: v for k, v in part.items() if k in ("type", "data")} for part in error["data"]
    ]
    assert [p["text"] for p in answer("error")["parts"] if p["type"] == "text"] == ["half"]

    stop = results["stop"]
    assert stop["status"] == "ready" and stop["error"] is None
    assert stop["textAtStop"]
    stopped = [r for r in upstream.requests if r.model == "case-stop"]
    assert len(stopped) == 1
    await asyncio.wait_for(stopped[0].disconnected.wait(), 2)  # the service closed the upstream
    assert stopped[0].writes_done < 400
    conversation_id = answer("stop")["metadata"]["conversation_id"]
    interrupted = await wait_for_status(client, service.url, conversation_id, "interrupted")
    assert interrupted["content"].startswith("t0 ")


async def test_the_sdk_client_resumes_after_a_reload(
    node: str, serve: Serve, upstream: FakeUpstream, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    tokens = [f"w{n} " for n in range(30)]
    upstream.on("case-reload", Reply(writes=sse_chunks(tokens), delay=0.04))
    settings = Settings(
        providers={"local": OpenAIConfig(base_url=upstream.base_url, model="fake-model")},
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'agent-backend.db'}"),
        streams=StreamsSettings(resume=True),
    )
    service = await serve(settings)
    output = await run_node(node, "test.mjs", service.url, "reload")
    result = json.loads(output.splitlines()[0])
    assert "failure" not in result, result.get("failure")
    assert result["textBeforeReload"] and result["textBeforeReload"] != "".join(tokens)
    assert result["storedRoles"] == ["user"]  # the answer was still streaming: it comes by the resume
    assert result["status"] == "ready" and result["error"] is None
    messages = result["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    text = [p["text"] for p in messages[1]["parts"] if p["type"] == "text"]
    assert text == ["".join(tokens)]  # whole, once: replayed from its start, then followed
    assert upstream.requests[-1].disconnected_at is None  # the reload never stopped the generation
    stored = await conversation(client, service.url, messages[1]["metadata"]["conversation_id"])
    assert stored["messages"][-1]["id"] == messages[1]["id"]
    assert stored["messages"][-1]["status"] == "complete"
    assert result["fresh"] == {"status": "ready", "error": None, "messages": 0}
