"""A tool round trip across requests on a stored conversation (CONTRACT §6, §12), on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx

from tests.fake_upstream import FakeUpstream, Recorded, Reply, sse_event
from tests.history.conftest import StartHistory
from tests.history.helpers import chat, conversation, meta_of, text_of

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def _calls(*ids: str) -> list[bytes]:
    """An answer that calls get_weather once per id (the arguments split over two fragments)."""
    writes = []
    for index, call_id in enumerate(ids):
        opening = {"name": "get_weather", "arguments": ""}
        first = {"index": index, "id": call_id, "type": "function", "function": opening}
        writes.append(sse_event({"choices": [{"index": 0, "delta": {"tool_calls": [first]}, "finish_reason": None}]}))
        for piece in ('{"city": ', f'"{call_id}"}}'):
            fragment = {"index": index, "function": {"arguments": piece}}
            writes.append(
                sse_event({"choices": [{"index": 0, "delta": {"tool_calls": [fragment]}, "finish_reason": None}]})
            )
    writes += [
        sse_event({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        b"data: [DONE]\n\n",
    ]
    return writes


def _answer_tools(request: Recorded) -> Reply:
    turns = request.body["messages"]
    if turns[-1]["role"] == "tool":
        return Reply.sse(["Weather: ", " & ".join(t["content"] for t in turns if t["role"] == "tool"), "."])
    return Reply(writes=_calls("call_a", "call_b"))


def _stored_calls() -> list[dict[str, Any]]:
    return [
        {"id": i, "type": "function", "function": {"name": "get_weather", "arguments": f'{{"city": "{i}"}}'}}
        for i in ("call_a", "call_b")
    ]


async def test_a_tool_round_trip_continues_a_stored_conversation(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.default = _answer_tools
    service = await start_history()
    status, first, _ = await chat(client, service.url, {"message": "weather?", "tools": [WEATHER]})
    assert status == 200
    assert first[-1] == {"done": True, "finish_reason": "tool_calls"}
    cid = meta_of(first)["conversation_id"]
    asked = (await conversation(client, service.url, cid))["messages"][-1]
    assert asked["role"] == "assistant" and asked["status"] == "complete"
    assert asked["finish_reason"] == "tool_calls"
    assert asked["tool_calls"] == _stored_calls()

    results = [
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": "rain"},
    ]
    status, second, _ = await chat(
        client, service.url, {"conversation_id": cid, "messages": results, "tools": [WEATHER]}
    )
    assert status == 200, second
    assert text_of(second) == "Weather: sunny & rain."
    sent = upstream.requests[-1].body["messages"]
    assert sent == [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": _stored_calls()},  # "" as the provider sends it
        *results,
    ]
    stored = (await conversation(client, service.url, cid))["messages"]
    assert [(m["role"], m.get("tool_call_id")) for m in stored] == [
        ("user", None),
        ("assistant", None),
        ("tool", "call_a"),
        ("tool", "call_b"),
        ("assistant", None),
    ]
    assert [m["content"] for m in stored[2:4]] == ["sunny", "rain"]
    assert stored[-1]["content"] == "Weather: sunny & rain." and stored[-1]["status"] == "complete"
    assert "tool_calls" not in stored[-1] and "tool_calls" not in stored[0]

    # The next user turn sees the whole round trip as history.
    await chat(client, service.url, {"conversation_id": cid, "message": "thanks"})
    assert [t["role"] for t in upstream.requests[-1].body["messages"]] == [
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
        "user",
    ]


async def test_tool_turns_must_answer_the_stored_last_answers_calls(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.default = _answer_tools
    service = await start_history()
    _, first, _ = await chat(client, service.url, {"message": "weather?", "tools": [WEATHER]})
    cid = meta_of(first)["conversation_id"]
    before = len(upstream.requests)

    wrong_id = {"role": "tool", "tool_call_id": "call_zzz", "content": "sunny"}
    status, body, _ = await chat(client, service.url, {"conversation_id": cid, "messages": [wrong_id]})
    assert status == 400 and body[0]["code"] == "invalid_request"
    assert "call_zzz" in body[0]["detail"]

    user_turn = {"role": "user", "content": "hi"}
    status, body, _ = await chat(client, service.url, {"conversation_id": cid, "messages": [user_turn]})
    assert status == 400 and body[0]["code"] == "invalid_request"
    assert "only tool turns" in body[0]["detail"]

    assert len(upstream.requests) == before  # nothing went upstream
    assert len((await conversation(client, service.url, cid))["messages"]) == 2  # and nothing was stored

    # A conversation whose last answer called nothing has no call to answer.
    upstream.on("plain", Reply.sse(["just text"]))
    _, plain, _ = await chat(client, service.url, {"message": "hello", "model": "plain"})
    status, body, _ = await chat(
        client,
        service.url,
        {"conversation_id": meta_of(plain)["conversation_id"], "messages": [{**wrong_id, "tool_call_id": "call_a"}]},
    )
    assert status == 400 and body[0]["code"] == "invalid_request"


async def test_the_history_cut_keeps_tool_turns_with_the_call_they_answer(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.default = _answer_tools
    # Three turns fit: [assistant(calls), tool, tool] would be four with the user turn, and a cut
    # at three that began at a tool turn would leave it without its call.
    service = await start_history(max_messages=3)
    _, first, _ = await chat(client, service.url, {"message": "weather?", "tools": [WEATHER]})
    cid = meta_of(first)["conversation_id"]
    results = [
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": "rain"},
    ]
    await chat(client, service.url, {"conversation_id": cid, "messages": results})
    await chat(client, service.url, {"conversation_id": cid, "message": "and tomorrow?"})
    sent = upstream.requests[-1].body["messages"]
    # Stored before the new message: user, assistant(calls), tool, tool, assistant. The newest three
    # are tool, tool, assistant; the two tool turns lost their call, so only the assistant stays.
    assert [t["role"] for t in sent] == ["assistant", "user"]
    assert sent[0]["content"] == "Weather: sunny & rain."
