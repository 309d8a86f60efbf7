"""The README's client snippets run as written, against the live service and the fake upstream."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fake_upstream import FakeUpstream, Recorded, Reply, sse_chunks, sse_event
from tests.integration.conftest import LiveService

README = Path(__file__).resolve().parents[2] / "README.md"
README_URL = "http://127.0.0.1:8000"
STREAM_CHAT = README.parent / "examples" / "react-vite" / "src" / "streamChat.js"


def snippet(language: str, marker: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    matching = [block for block in blocks if marker in block]
    assert len(matching) == 1, f"expected one {language} block containing {marker!r}"
    return matching[0]


async def test_python_client_prints_the_streamed_answer(
    upstream: FakeUpstream, service: LiveService, tmp_path: Path
) -> None:
    upstream.default = Reply.sse(["Hi", " there", " — ", "🙂"])
    code = snippet("python", 'with httpx.stream("POST", "http://127.0.0.1:8000/chat"').replace(README_URL, service.url)
    out = io.StringIO()

    def run() -> None:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {"__name__": "readme"})

    await asyncio.to_thread(run)
    assert out.getvalue() == "Hi there — 🙂\n"


def require_node() -> None:
    """Skip without Node.js, except under ``CI=true``, where CI must not pass by skipping (``.ci/run`` installs it)."""
    if shutil.which("node") is not None:
        return
    if os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}:
        pytest.fail("CI=true, but Node.js is not installed (.ci/run installs it with apt-get)", pytrace=False)
    pytest.skip("needs Node.js for the browser snippet")


def test_the_readme_browser_snippet_is_the_react_example_s_stream_chat_module() -> None:
    # One source: the React + Vite example imports this file, so the README cannot drift from it.
    assert snippet("js", "export async function streamChat") == STREAM_CHAT.read_text(encoding="utf-8")


async def test_browser_client_collects_the_streamed_answer(
    upstream: FakeUpstream, service: LiveService, tmp_path: Path
) -> None:
    require_node()
    # Several lines arrive in one write, with non-ASCII text: the line splitting must hold.
    upstream.default = Reply.sse(["Hé", "llo ", "wörld 🙂"], per_write=2)
    module = tmp_path / "client.mjs"
    module.write_text(snippet("js", "export async function streamChat"))
    runner = tmp_path / "run.mjs"
    runner.write_text(
        'import { streamChat } from "./client.mjs";\n'
        "let text = '';\n"
        f"const options = {{ baseUrl: {json.dumps(service.url)}, onDelta: (d) => {{ text += d; }} }};\n"
        "const done = await streamChat({ message: 'hi' }, options);\n"
        "console.log(JSON.stringify({ text, finish: done.finish_reason }));\n"
    )
    node = await asyncio.create_subprocess_exec(
        "node", str(runner), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
    )
    stdout, stderr = await asyncio.wait_for(node.communicate(), timeout=30)
    assert node.returncode == 0, stderr.decode()
    assert stdout.decode().strip() == '{"text":"Héllo wörld 🙂","finish":"stop"}'


async def test_browser_client_throws_the_contract_s_error_code_and_retryable(
    upstream: FakeUpstream, service: LiveService, tmp_path: Path
) -> None:
    require_node()
    upstream.default = Reply.json({"error": {"message": "loading", "type": "server_error"}}, 503)
    (tmp_path / "client.mjs").write_text(snippet("js", "export async function streamChat"))
    runner = tmp_path / "run.mjs"
    runner.write_text(
        'import { streamChat } from "./client.mjs";\n'
        f"try {{ await streamChat({{ message: 'hi' }}, {{ baseUrl: {json.dumps(service.url)} }}); }}\n"
        "catch (error) { console.log(JSON.stringify({ code: error.code, retryable: error.retryable })); }\n"
    )
    node = await asyncio.create_subprocess_exec(
        "node", str(runner), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
    )
    stdout, stderr = await asyncio.wait_for(node.communicate(), timeout=30)
    assert node.returncode == 0, stderr.decode()
    assert json.loads(stdout) == {"code": "upstream_unavailable", "retryable": True}


async def test_websocket_client_streams_and_stops(upstream: FakeUpstream, service: LiveService, tmp_path: Path) -> None:
    require_node()
    upstream.default = Reply.sse(["Hé", "llo ", "wörld 🙂"])
    upstream.on("endless", Reply(writes=sse_chunks(["first"], finish_reason=None, done=False), hold_open=True))
    module = tmp_path / "socket.mjs"
    module.write_text(
        snippet("js", "export function openChatSocket").replace(README_URL.replace("http", "ws"), ws(service))
    )
    runner = tmp_path / "run.mjs"
    runner.write_text(
        'import { openChatSocket } from "./socket.mjs";\n'
        "const chat = openChatSocket();\n"
        "let text = '';\n"
        "const first = await chat.send({ message: 'hi' }, { onDelta: (d) => { text += d; } });\n"
        "let partial = '';\n"
        "const second = await chat.send({ message: 'go on', model: 'endless' }, {\n"
        "  onDelta: (d) => { partial += d; chat.stop(); },\n"
        "});\n"
        "chat.close();\n"
        "console.log(JSON.stringify({ text, finish: first.finish_reason, partial, stopped: second.finish_reason }));\n"
    )
    node = await asyncio.create_subprocess_exec(
        "node", "--experimental-websocket", str(runner), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
    )
    stdout, stderr = await asyncio.wait_for(node.communicate(), timeout=30)
    assert node.returncode == 0, stderr.decode()
    assert json.loads(stdout) == {
        "text": "Héllo wörld 🙂",
        "finish": "stop",
        "partial": "first",
        "stopped": "cancelled",
    }
    await asyncio.wait_for(upstream.requests[-1].disconnected.wait(), 1.0)


def ws(service: LiveService) -> str:
    return service.url.replace("http://", "ws://")


async def test_python_tool_round_trip_runs_the_tool_and_prints_the_answer(
    upstream: FakeUpstream, service: LiveService
) -> None:
    def reply(request: Recorded) -> Reply:
        turns = request.body["messages"]
        if turns[-1]["role"] == "tool":  # the result came back: answer with it
            return Reply.sse(["In Paris: ", turns[-1]["content"], "."])
        call = {"index": 0, "id": "call_7", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
        writes = [sse_event({"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]})]
        for piece in ('{"ci', 'ty": "Pa', 'ris"}'):
            fragment = {"index": 0, "function": {"arguments": piece}}
            writes.append(
                sse_event({"choices": [{"index": 0, "delta": {"tool_calls": [fragment]}, "finish_reason": None}]})
            )
        writes += [
            sse_event({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            b"data: [DONE]\n\n",
        ]
        return Reply(writes=writes)

    upstream.default = reply
    code = snippet("python", "def get_weather").replace(README_URL, service.url)
    out = io.StringIO()

    def run() -> None:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {"__name__": "readme"})

    await asyncio.to_thread(run)
    assert out.getvalue() == "In Paris: 18 °C and sunny in Paris.\n"
    second = upstream.requests[-1].body
    assert second["messages"][1]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    assert second["messages"][2] == {"role": "tool", "content": "18 °C and sunny in Paris", "tool_call_id": "call_7"}
    assert second["tools"][0]["function"]["name"] == "get_weather"
