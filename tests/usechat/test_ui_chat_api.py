"""`POST /api/chat` and `GET /api/chat/{id}/messages` over real sockets: uvicorn, the fake upstream, a database."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from app.config import Settings
from app.sections import DatabaseSettings
from providers import OpenAIConfig
from tests.fake_upstream import FakeUpstream, Reply, sse_chunks, sse_event
from tests.history.conftest import Serve, StartHistory
from tests.history.helpers import conversation, wait_for_status
from tests.usechat.ui_helpers import assistant, ui_parts, ui_text, user


async def ui_chat(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], principal: str | None = None
) -> httpx.Response:
    headers = {"X-Test-Principal": principal} if principal else {}
    return await client.post(f"{url}/api/chat", json=body, headers=headers)


def submit(chat_id: str, *messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": chat_id, "messages": list(messages), "trigger": "submit-message", **extra}


async def test_the_stream_is_the_ui_message_protocol_and_is_stored(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    service = await start_history()
    upstream.on(
        "fake-model", Reply(writes=sse_chunks(["Hi", " there"], usage={"prompt_tokens": 4, "completion_tokens": 2}))
    )
    response = await ui_chat(client, service.url, submit("chat_A1", user("Hello")))
    assert response.status_code == 200, response.text
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    parts = ui_parts(response)
    assert parts[-1] == "[DONE]"
    start = parts[0]
    assert start["type"] == "start"
    metadata = start["messageMetadata"]
    assert metadata["model"] == "fake-model" and metadata["provider"] == "local"
    assert [p["type"] for p in parts[1:-1]] == [
        "start-step",
        "text-start",
        "text-delta",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
    ]
    assert ui_text(parts) == "Hi there"
    assert parts[-2] == {
        "type": "finish",
        "finishReason": "stop",
        "messageMetadata": {"usage": {"prompt_tokens": 4, "completion_tokens": 2}},
    }
    # Stored: the conversation the chat id names, with the answer under start.messageId.
    stored = await conversation(client, service.url, metadata["conversation_id"])
    assert [(m["role"], m["content"]) for m in stored["messages"]] == [("user", "Hello"), ("assistant", "Hi there")]
    assert stored["messages"][1]["id"] == start["messageId"]
    assert stored["messages"][1]["status"] == "complete"
    assert upstream.requests[-1].body["messages"] == [{"role": "user", "content": "Hello"}]


async def test_only_the_last_message_is_new_and_the_rest_comes_from_storage(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    service = await start_history()
    upstream.on("fake-model", Reply(writes=sse_chunks(["One"])))
    first = ui_parts(await ui_chat(client, service.url, submit("c2", user("first"))))
    upstream.on("fake-model", Reply(writes=sse_chunks(["Two"])))
    # The client's copy of the history says something else: storage wins, only the last message is new.
    body = submit("c2", user("tampered"), assistant("tampered too"), user("second", "u2"))
    second = ui_parts(await ui_chat(client, service.url, body))
    assert ui_text(second) == "Two"
    assert upstream.requests[-1].body["messages"] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "One"},
        {"role": "user", "content": "second"},
    ]
    assert second[0]["messageMetadata"]["conversation_id"] == first[0]["messageMetadata"]["conversation_id"]
    # GET /api/chat/{id}/messages: the stored conversation as UIMessages.
    listed = await client.get(f"{service.url}/api/chat/c2/messages")
    assert listed.status_code == 200, listed.text
    messages = listed.json()
    assert [(m["role"], next(p for p in m["parts"] if p["type"] == "text")["text"]) for m in messages] == [
        ("user", "first"),
        ("assistant", "One"),
        ("user", "second"),
        ("assistant", "Two"),
    ]
    assert messages[3]["id"] == second[0]["messageId"]
    assert messages[3]["metadata"]["status"] == "complete"


async def test_chat_ids_belong_to_their_principal(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    service = await start_history()
    alice = ui_parts(await ui_chat(client, service.url, submit("shared-id", user("from alice")), principal="alice"))
    bob = ui_parts(await ui_chat(client, service.url, submit("shared-id", user("from bob")), principal="bob"))
    assert alice[0]["messageMetadata"]["conversation_id"] != bob[0]["messageMetadata"]["conversation_id"]
    assert upstream.requests[-1].body["messages"] == [{"role": "user", "content": "from bob"}]
    mine = await client.get(f"{service.url}/api/chat/shared-id/messages", headers={"X-Test-Principal": "alice"})
    assert [m["parts"][0]["text"] for m in mine.json() if m["role"] == "user"] == ["from alice"]
    nobody = await client.get(f"{service.url}/api/chat/shared-id/messages", headers={"X-Test-Principal": "carol"})
    assert nobody.status_code == 404 and nobody.json()["code"] == "not_found"


async def test_regenerate_replaces_the_last_answer(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    service = await start_history()
    upstream.on("fake-model", Reply(writes=sse_chunks(["first answer"])))
    first = ui_parts(await ui_chat(client, service.url, submit("regen", user("question"))))
    upstream.on("fake-model", Reply(writes=sse_chunks(["better answer"])))
    body = {
        "id": "regen",
        "messages": [user("question")],
        "trigger": "regenerate-message",
        "messageId": first[0]["messageId"],
    }
    again = ui_parts(await ui_chat(client, service.url, body))
    assert ui_text(again) == "better answer"
    assert upstream.requests[-1].body["messages"] == [{"role": "user", "content": "question"}]
    stored = await conversation(client, service.url, again[0]["messageMetadata"]["conversation_id"])
    assert [(m["role"], m["content"]) for m in stored["messages"]] == [
        ("user", "question"),
        ("assistant", "better answer"),
    ]


async def test_a_new_user_message_without_text_is_400(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    service = await start_history()
    for parts in ([], [{"type": "text", "text": ""}], [{"type": "step-start"}]):
        message = {"id": "u1", "role": "user", "parts": parts}
        response = await ui_chat(client, service.url, submit("blank", message))
        assert response.status_code == 400, parts
        assert response.json()["code"] == "invalid_request"
    assert upstream.requests == []
    assert (await client.get(f"{service.url}/conversations")).json()["data"] == []


async def test_a_regenerate_that_fails_before_streaming_loses_nothing(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    service = await start_history()
    upstream.on("fake-model", Reply(writes=sse_chunks(["kept answer"])))
    first = ui_parts(await ui_chat(client, service.url, submit("keep", user("question"))))
    before = (await client.get(f"{service.url}/api/chat/keep/messages")).json()
    upstream.on("fake-model", Reply.json({"error": {"message": "boom"}}, status=500))
    regenerate = {"id": "keep", "messages": [user("question")], "trigger": "regenerate-message"}
    failed = await ui_chat(client, service.url, {**regenerate, "messageId": first[0]["messageId"]})
    assert failed.status_code == 502 and failed.json()["code"] == "upstream_unavailable"
    assert (await client.get(f"{service.url}/api/chat/keep/messages")).json() == before
    listed = (await client.get(f"{service.url}/conversations")).json()["data"]
    assert listed[0]["message_count"] == 2
    # and the conversation is free for the next try
    upstream.on("fake-model", Reply(writes=sse_chunks(["second try"])))
    again = ui_parts(await ui_chat(client, service.url, regenerate))
    assert ui_text(again) == "second try"
    after = (await client.get(f"{service.url}/api/chat/keep/messages")).json()
    assert after[0] == before[0]  # the question keeps its id
    assert [m["parts"][-1]["text"] for m in after] == ["question", "second try"]


async def test_regenerate_removes_the_answer_and_what_follows_and_keeps_what_came_before(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    service = await start_history()
    for text in ("a1", "a2"):
        upstream.on("fake-model", Reply(writes=sse_chunks([text])))
        await ui_chat(client, service.url, submit("middle", user("q" + text[1])))
    stored = (await client.get(f"{service.url}/api/chat/middle/messages")).json()
    assert [m["parts"][-1]["text"] for m in stored] == ["q1", "a1", "q2", "a2"]
    upstream.on("fake-model", Reply(writes=sse_chunks(["a1 again"])))
    body = {"id": "middle", "messages": stored[:1], "trigger": "regenerate-message", "messageId": stored[1]["id"]}
    assert ui_text(ui_parts(await ui_chat(client, service.url, body))) == "a1 again"
    assert upstream.requests[-1].body["messages"] == [{"role": "user", "content": "q1"}]
    after = (await client.get(f"{service.url}/api/chat/middle/messages")).json()
    assert [m["parts"][-1]["text"] for m in after] == ["q1", "a1 again"]
    assert after[0]["id"] == stored[0]["id"]


async def test_error_mid_stream_is_data_error_error_and_finish(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    service = await start_history()
    # Two deltas, then the connection ends without a finish reason: stream_interrupted.
    upstream.on("fake-model", Reply(writes=sse_chunks(["part", "ial"], finish_reason=None, done=False)))
    parts = ui_parts(await ui_chat(client, service.url, submit("err", user("hi"))))
    types = [p["type"] if isinstance(p, dict) else p for p in parts]
    assert types[-7:] == ["text-delta", "text-end", "data-error", "error", "finish-step", "finish", "[DONE]"]
    data_error = parts[-5]
    assert data_error == {
        "type": "data-error",
        "data": {"code": "stream_interrupted", "retryable": True},
        "transient": True,
    }
    assert parts[-4]["errorText"]
    assert parts[-2] == {"type": "finish", "finishReason": "error"}
    conversation_id = parts[0]["messageMetadata"]["conversation_id"]
    stored = await wait_for_status(client, service.url, conversation_id, "error")
    assert stored["content"] == "partial" and stored["error"]["code"] == "stream_interrupted"


async def test_errors_before_the_stream_are_problem_json(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    service = await start_history()
    cases: list[Any] = [
        [],
        {"messages": [user("x")]},  # no id
        submit("bad id!", user("x")),
        submit("ok"),  # no messages
        submit("ok", {"role": "robot", "parts": []}),
        submit("ok", user("x"), trigger="resubmit"),
        submit("ok", {"role": "user", "parts": [{"type": "text", "text": 5}]}),
        submit("ok", user("x"), temperature=9),
        submit("ok", user("x"), tools=[{"type": "function", "function": {"name": "bad name"}}]),
        submit("ok", user("x"), assistant("last is not a user message")),
    ]
    for body in cases:
        response = await client.post(f"{service.url}/api/chat", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "invalid_request"
    malformed = await client.post(
        f"{service.url}/api/chat", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400 and malformed.json()["code"] == "invalid_request"
    upstream.on("fake-model", Reply.json({"error": {"message": "context too long"}}, status=400))
    refused = await ui_chat(client, service.url, submit("refused", user("x")))
    assert refused.status_code == 400 and refused.json()["code"] == "upstream_rejected"
    missing = await client.get(f"{service.url}/api/chat/never-used/messages")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


async def test_a_client_that_aborts_is_a_normal_disconnect(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient, caplog: Any
) -> None:
    service = await start_history()
    upstream.on("fake-model", Reply(writes=sse_chunks([f"t{n} " for n in range(200)]), delay=0.02))
    async with client.stream("POST", f"{service.url}/api/chat", json=submit("abort", user("go"))) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_bytes():
            if b"text-delta" in chunk:
                break
    recorded = upstream.requests[-1]
    await asyncio.wait_for(recorded.disconnected.wait(), 2)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], caplog.text


async def test_tool_calls_and_reasoning_are_ui_parts(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    service = await start_history()
    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "fake-model"}

    def delta(d: dict[str, Any], finish: str | None = None) -> bytes:
        return sse_event({**chunk, "choices": [{"index": 0, "delta": d, "finish_reason": finish}]})

    upstream.on(
        "fake-model",
        Reply(
            writes=[
                delta({"reasoning_content": "let me see"}),
                delta({"content": "Checking."}),
                delta(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_7",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"city":'},
                            }
                        ]
                    }
                ),
                delta({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
                delta({}, "tool_calls"),
                b"data: [DONE]\n\n",
            ]
        ),
    )
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    parts = ui_parts(await ui_chat(client, service.url, submit("tools", user("weather?"), tools=tools)))
    types = [p["type"] for p in parts[:-1]]
    assert types == [
        "start",
        "start-step",
        "reasoning-start",
        "reasoning-delta",
        "reasoning-end",
        "text-start",
        "text-delta",
        "tool-input-start",
        "tool-input-delta",
        "tool-input-delta",
        "tool-input-available",
        "text-end",
        "finish-step",
        "finish",
    ]
    available = parts[10]
    assert available == {
        "type": "tool-input-available",
        "toolCallId": "call_7",
        "toolName": "get_weather",
        "input": {"city": "Paris"},
        "dynamic": True,
    }
    assert parts[-2]["finishReason"] == "tool-calls"
    assert upstream.requests[-1].body["tools"] == tools


async def test_tool_outputs_sent_back_continue_the_stored_chat(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    """The SDK runs the tool and resubmits the assistant message with its output: the answer follows."""
    service = await start_history()
    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "fake-model"}
    call = {"index": 0, "id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    calling = [
        sse_event({**chunk, "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}),
        sse_event(
            {
                **chunk,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":"Oslo"}'}}]},
                        "finish_reason": None,
                    }
                ],
            }
        ),
        sse_event({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        b"data: [DONE]\n\n",
    ]
    upstream.on(
        "fake-model",
        lambda request: (
            Reply(writes=calling)
            if request.body["messages"][-1]["role"] == "user"
            else Reply.sse(["Oslo: ", request.body["messages"][-1]["content"]])
        ),
    )
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    first = ui_parts(await ui_chat(client, service.url, submit("toolchat", user("weather?"), tools=tools)))
    assert first[-2]["finishReason"] == "tool-calls"
    answered = {
        "id": first[0]["messageId"],
        "role": "assistant",
        "parts": [
            {"type": "step-start"},
            {
                "type": "dynamic-tool",
                "toolName": "get_weather",
                "toolCallId": "call_9",
                "state": "output-available",
                "input": {"city": "Oslo"},
                "output": {"temp": 3},
            },
        ],
    }
    response = await ui_chat(client, service.url, submit("toolchat", user("weather?"), answered, tools=tools))
    assert response.status_code == 200, response.text
    assert ui_text(ui_parts(response)) == 'Oslo: {"temp":3}'
    sent = upstream.requests[-1].body["messages"]
    assert [t["role"] for t in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["id"] == "call_9"
    assert sent[2] == {"role": "tool", "content": '{"temp":3}', "tool_call_id": "call_9"}

    stored = (await client.get(f"{service.url}/api/chat/toolchat/messages")).json()
    assert [m["role"] for m in stored] == ["user", "assistant", "assistant"]
    tool_part = next(p for p in stored[1]["parts"] if p["type"] == "dynamic-tool")
    assert tool_part == {
        "type": "dynamic-tool",
        "toolName": "get_weather",
        "toolCallId": "call_9",
        "state": "output-available",
        "input": {"city": "Oslo"},
        "output": '{"temp":3}',
    }
    assert stored[2]["parts"][-1] == {"type": "text", "text": 'Oslo: {"temp":3}', "state": "done"}

    # Regenerating the answer to the tool outputs answers them again (the SDK sends the message with them).
    final_id = stored[2]["id"]
    body = {"id": "toolchat", "messages": [user("weather?"), answered], "trigger": "regenerate-message"}
    regenerated = await ui_chat(client, service.url, {**body, "messageId": final_id, "tools": tools})
    assert regenerated.status_code == 200, regenerated.text
    assert ui_text(ui_parts(regenerated)) == 'Oslo: {"temp":3}'
    assert [t["role"] for t in upstream.requests[-1].body["messages"]] == ["user", "assistant", "tool"]
    again = (await client.get(f"{service.url}/api/chat/toolchat/messages")).json()
    assert [m["id"] for m in again[:2]] == [m["id"] for m in stored[:2]] and again[2]["id"] != final_id

    # Outputs for a call the stored answer never made are refused, and nothing is stored.
    wrong = {**answered, "parts": [{**answered["parts"][1], "toolCallId": "call_zz"}]}
    refused = await ui_chat(client, service.url, submit("toolchat", user("weather?"), wrong, tools=tools))
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_request"
    assert len((await client.get(f"{service.url}/api/chat/toolchat/messages")).json()) == 3
    # An assistant message without outputs is refused too.
    bare = {**answered, "parts": [{**answered["parts"][1], "state": "input-available"}]}
    refused = await ui_chat(client, service.url, submit("toolchat", user("weather?"), bare, tools=tools))
    assert refused.status_code == 400 and "tool outputs" in refused.json()["detail"]


async def test_without_persistence_the_messages_are_the_whole_conversation(
    serve: Serve, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    settings = Settings(
        providers={"local": OpenAIConfig(base_url=upstream.base_url, model="fake-model")},
        database=DatabaseSettings(enabled=False),
    )
    service = await serve(settings)
    tool_turn = {
        "id": "a1",
        "role": "assistant",
        "parts": [
            {"type": "step-start"},
            {"type": "text", "text": "Let me look."},
            {
                "type": "dynamic-tool",
                "toolName": "get_weather",
                "toolCallId": "call_1",
                "state": "output-available",
                "input": {"city": "Paris"},
                "output": {"temp": 21},
            },
            {"type": "step-start"},
            {"type": "text", "text": "It is 21."},
        ],
    }
    body = submit("stateless", user("weather?"), tool_turn, user("thanks", "u2"), system="be brief", max_tokens=7)
    parts = ui_parts(await ui_chat(client, service.url, body))
    # Not stored, so no stored id, but the contract's start part still names the message.
    assert uuid.UUID(parts[0]["messageId"]) and "conversation_id" not in parts[0]["messageMetadata"]
    empty = await ui_chat(client, service.url, submit("stateless", user("weather?"), user("", "u3")))
    assert empty.status_code == 400 and "needs text" in empty.json()["detail"]
    sent = upstream.requests[-1].body
    assert sent["max_tokens"] == 7
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": '{"temp":21}', "tool_call_id": "call_1"},
        {"role": "assistant", "content": "It is 21."},
        {"role": "user", "content": "thanks"},
    ]
    off = await client.get(f"{service.url}/api/chat/stateless/messages")
    assert off.status_code == 404
    assert "database.enabled = false" in off.json()["detail"]


async def test_openapi_documents_the_routes(start_history: StartHistory, client: httpx.AsyncClient) -> None:
    service = await start_history()
    document = (await client.get(f"{service.url}/schema/openapi.json")).json()
    post = document["paths"]["/api/chat"]["post"]
    assert "text/event-stream" in post["responses"]["200"]["content"]
    assert "x-vercel-ai-ui-message-stream" in post["responses"]["200"]["description"]
    assert "application/problem+json" in post["responses"]["400"]["content"]
    assert "requestBody" in post
    assert "/api/chat/{chat_id}/messages" in document["paths"]


async def test_a_call_whose_arguments_are_not_json_reloads_as_the_stream_showed_it(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    service = await start_history()
    call = {"index": 0, "id": "call_x", "type": "function", "function": {"name": "get_weather", "arguments": "{oops"}}
    upstream.on(
        "fake-model",
        Reply(
            writes=[
                sse_event({"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}),
                sse_event({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
                b"data: [DONE]\n\n",
            ]
        ),
    )
    live = ui_parts(await ui_chat(client, service.url, submit("badargs", user("weather?"))))
    error = next(p for p in live if isinstance(p, dict) and p["type"] == "tool-input-error")
    stored = (await client.get(f"{service.url}/api/chat/badargs/messages")).json()
    tool_part = next(p for p in stored[1]["parts"] if p["type"] == "dynamic-tool")
    assert tool_part == {
        "type": "dynamic-tool",
        "toolName": "get_weather",
        "toolCallId": "call_x",
        "state": "output-error",
        "input": "{oops",
        "errorText": error["errorText"],
    }
