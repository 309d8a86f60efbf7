"""Tool calls as real servers stream them: one transcript per quirk, the same events out (CONTRACT §12).

Each transcript is the body a server sends (OpenAI-style SSE, or Ollama's NDJSON), in the shape
those servers use; the provider under test is the real one, behind respx. Splitting a transcript
anywhere (inside a multi-byte character too) must give the same events.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from providers import (
    CalledFunction,
    ChatEvent,
    ChatMessage,
    ChatParams,
    FunctionSpec,
    OllamaConfig,
    OllamaProvider,
    OpenAICompatibleProvider,
    OpenAIConfig,
    ToolChoice,
    ToolSpec,
    ToolTurnCall,
)
from providers.base import NamedFunction

OPENAI = "http://upstream.test/v1"
OLLAMA = "http://ollama.test"
ARGS = '{"city": "Zürich", "unit": "°C"}'


def sse(obj: object) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def choice(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return sse(
        {
            "id": "x",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


DONE = b"data: [DONE]\n\n"

# --- transcripts -------------------------------------------------------------------------------

OPENAI_STYLE = [  # OpenAI and llama.cpp's server with --jinja
    choice({"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
    *(choice({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in pieces(ARGS, 4)),
    choice({}, "tool_calls"),
    DONE,
]  # fmt: skip
VLLM = [  # id "" (and type null) on later fragments
    choice({"role": "assistant", "content": ""}),
    choice({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather"}}]}),
    *(
        choice({"tool_calls": [{"index": 0, "id": "", "type": None, "function": {"arguments": p}}]})
        for p in pieces(ARGS, 5)
    ),
    choice({}, "tool_calls"),
    sse({"id": "x", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}}),
    DONE,
]
LM_STUDIO = [  # name "" on argument fragments, the id repeated
    choice({"role": "assistant", "tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
    *(
        choice({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "", "arguments": p}}]})
        for p in pieces(ARGS, 6)
    ),
    choice({}, "tool_calls"),
    DONE,
]  # fmt: skip
GOOGLE = [  # no index; the whole call at once
    sse({"choices": [{"delta": {"role": "assistant", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ARGS}}]},
        "finish_reason": "tool_calls", "index": 0}]}),
    DONE,
]  # fmt: skip
OLLAMA_COMPAT_PARALLEL = [  # Ollama's /v1: two calls, both at index 0, told apart by id; "stop" at the end
    choice({"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "index": 0, "type": "function", "function": {"name": "get_weather", "arguments": ARGS}},
        {"id": "call_2", "index": 0, "type": "function", "function": {"name": "get_time", "arguments": '{"zone":"CET"}'}},
    ]}),
    choice({}, "stop"),
    DONE,
]  # fmt: skip


LLAMA_CPP_PYTHON = [  # recorded shape of llama-cpp-python 0.3 (chatml-function-calling): id and name on every
    # fragment, the legacy function_call beside tool_calls, a role-only chunk with nulls first
    sse({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gemma", "choices": [
        {"index": 0, "finish_reason": None, "logprobs": None, "delta": {"role": "assistant", "content": None, "function_call": None, "tool_calls": None}}]}),
    *(
        sse({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gemma", "choices": [
            {"index": 0, "finish_reason": None, "logprobs": None, "delta": {"role": None, "content": None,
             "function_call": {"name": "get_weather", "arguments": p},
             "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": p}}]}}]})
        for p in pieces(ARGS, 3)
    ),
    sse({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gemma", "choices": [
        {"index": 0, "finish_reason": "tool_calls", "logprobs": None, "delta": {"role": None, "content": None, "function_call": None, "tool_calls": None}}]}),
    DONE,
]  # fmt: skip


def ollama_line(message: dict[str, Any], *, done: bool = False, **extra: Any) -> bytes:
    line = {"model": "m", "created_at": "2025-01-01T00:00:00Z", "message": message, "done": done, **extra}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


OLLAMA_NATIVE = [  # whole calls in one chunk, arguments as objects, no ids, done_reason "stop"
    ollama_line({"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "°C"}}},
        {"function": {"name": "get_time", "arguments": {"zone": "CET"}}},
    ]}),
    ollama_line({"role": "assistant", "content": ""}, done=True, done_reason="stop", prompt_eval_count=12, eval_count=9),
]  # fmt: skip

COMPACT_WEATHER = '{"city":"Zürich","unit":"°C"}'


def weather_call(arguments: str = ARGS, call_id: str = "call_1") -> dict[str, Any]:
    return {"tool_call": {"index": 0, "id": call_id, "name": "get_weather", "arguments": arguments}}


EXPECTED_ONE_CALL = [weather_call(), {"done": True, "finish_reason": "tool_calls"}]
CASES: dict[str, tuple[str, list[bytes], list[dict[str, Any]]]] = {
    "openai": ("openai", OPENAI_STYLE, EXPECTED_ONE_CALL),
    "vllm": (
        "openai",
        VLLM,
        [weather_call(), {"done": True, "finish_reason": "tool_calls", "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}}],
    ),
    "lm-studio": ("openai", LM_STUDIO, EXPECTED_ONE_CALL),
    "llama-cpp-python": ("openai", LLAMA_CPP_PYTHON, EXPECTED_ONE_CALL),
    "google": ("openai", GOOGLE, EXPECTED_ONE_CALL),
    "ollama-compat-parallel": (
        "openai",
        OLLAMA_COMPAT_PARALLEL,
        [
            weather_call(),
            {"tool_call": {"index": 1, "id": "call_2", "name": "get_time", "arguments": '{"zone":"CET"}'}},
            {"done": True, "finish_reason": "tool_calls"},
        ],
    ),
    "ollama-native": ("ollama", OLLAMA_NATIVE, []),  # ids are made: checked below
}  # fmt: skip


def body_reply(parts: list[bytes], content_type: str) -> Any:
    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    return lambda request: httpx.Response(200, headers={"content-type": content_type}, content=body())


async def run(kind: str, parts: list[bytes], params: ChatParams | None = None) -> tuple[list[Any], httpx.Request]:
    params = params or ChatParams(messages=[ChatMessage("user", "weather?")], model="m", max_tokens=64)
    async with httpx.AsyncClient() as client:
        with respx.mock:
            if kind == "openai":
                route = respx.post(f"{OPENAI}/chat/completions").mock(
                    side_effect=body_reply(parts, "text/event-stream")
                )
                provider: Any = OpenAICompatibleProvider("local", OpenAIConfig(base_url=OPENAI), client)
            else:
                route = respx.post(f"{OLLAMA}/api/chat").mock(side_effect=body_reply(parts, "application/x-ndjson"))
                provider = OllamaProvider("local", OllamaConfig(base_url=OLLAMA), client)
            stream = await provider.open(params)
            try:
                events: list[ChatEvent] = [event async for batch in stream for event in batch]
            finally:
                await stream.aclose()
    return [msgspec.to_builtins(event) for event in events], route.calls.last.request


def deltas_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["tool_call_delta"] for e in events if "tool_call_delta" in e]


@pytest.mark.parametrize("case", [c for c in CASES if c != "ollama-native"])
async def test_every_server_shape_gives_the_same_calls(case: str) -> None:
    kind, parts, expected = CASES[case]
    events, _ = await run(kind, parts)
    deltas = deltas_of(events)
    assert [e for e in events if "tool_call_delta" not in e] == expected
    # The first delta of each call carries its id and name; joined, the fragments are the arguments.
    for call in [e["tool_call"] for e in expected if "tool_call" in e]:
        own = [d for d in deltas if d["index"] == call["index"]]
        assert (own[0]["id"], own[0]["name"]) == (call["id"], call["name"])
        assert all("id" not in d and "name" not in d for d in own[1:])
        assert "".join(d["arguments"] for d in own) == call["arguments"]
    # Every delta comes before the complete calls, which come before done.
    kinds = [next(iter(e)) for e in events]
    assert kinds == sorted(kinds, key=["tool_call_delta", "tool_call", "done"].index)


async def test_ollamas_native_calls_are_the_same_events_with_made_ids() -> None:
    events, _ = await run("ollama", OLLAMA_NATIVE)
    calls = [e["tool_call"] for e in events if "tool_call" in e]
    assert [(c["index"], c["name"], c["arguments"]) for c in calls] == [
        (0, "get_weather", COMPACT_WEATHER),
        (1, "get_time", '{"zone":"CET"}'),
    ]
    assert all(c["id"].startswith("call_") for c in calls) and calls[0]["id"] != calls[1]["id"]
    assert events[-1] == {
        "done": True,
        "finish_reason": "tool_calls",  # Ollama said "stop"
        "usage": {"prompt_tokens": 12, "completion_tokens": 9},
    }
    assert [d["id"] for d in deltas_of(events)] == [c["id"] for c in calls]


async def test_text_before_the_call_stays_text() -> None:
    parts = [choice({"role": "assistant", "content": "Let me check. "}), *OPENAI_STYLE[0:]]
    events, _ = await run("openai", parts)
    assert events[0] == {"delta": "Let me check. "}
    assert events[-1]["finish_reason"] == "tool_calls"


async def test_an_answer_cut_off_mid_call_is_no_call() -> None:
    events, _ = await run("openai", OPENAI_STYLE[:3])  # no finish, no [DONE]: the connection just ends
    assert not [e for e in events if "tool_call" in e]
    assert events[-1]["error"]["code"] == "stream_interrupted"


async def test_length_keeps_its_finish_reason_with_the_calls_so_far() -> None:
    parts = [*OPENAI_STYLE[:3], choice({}, "length"), DONE]
    events, _ = await run("openai", parts)
    assert events[-1] == {"done": True, "finish_reason": "length"}
    assert [e["tool_call"]["arguments"] for e in events if "tool_call" in e] == [ARGS[:8]]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(sorted(CASES)), data=st.data())
async def test_splitting_a_transcript_anywhere_gives_the_same_events(case: str, data: st.DataObject) -> None:
    kind, parts, _ = CASES[case]
    whole = b"".join(parts)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(whole) - 1), max_size=8))))
    split = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
    reference, _ = await run(kind, parts)
    events, _ = await run(kind, split)
    if kind == "ollama":  # made ids differ from run to run
        for event in (*reference, *events):
            for key in ("tool_call", "tool_call_delta"):
                if key in event and "id" in event[key]:
                    event[key]["id"] = "made"
    assert events == reference


# --- what goes upstream ------------------------------------------------------------------------

TOOLS = [
    ToolSpec(
        FunctionSpec(
            "get_weather", "The weather in a city", {"type": "object", "properties": {"city": {"type": "string"}}}
        )
    )
]
ROUND_TRIP = [
    ChatMessage("user", "Weather in Zürich?"),
    ChatMessage("assistant", None, [ToolTurnCall("call_1", CalledFunction("get_weather", '{"city":"Zürich"}'))]),
    ChatMessage("tool", "12 °C, cloudy", tool_call_id="call_1"),
]  # fmt: skip


async def test_openai_request_carries_tools_choice_and_tool_turns() -> None:
    params = ChatParams(
        messages=ROUND_TRIP,
        model="m",
        max_tokens=64,
        tools=TOOLS,
        tool_choice=ToolChoice(NamedFunction("get_weather")),
        parallel_tool_calls=False,
    )
    _, request = await run("openai", [choice({"content": "It is 12 °C."}, "stop"), DONE], params)
    body = json.loads(request.content)
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Zürich?"},
        {
            "role": "assistant",
            "content": "",  # not left out: llama-cpp-python's templates read every turn's content
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Zürich"}'},
                }
            ],
        },
        {"role": "tool", "content": "12 °C, cloudy", "tool_call_id": "call_1"},
    ]


async def test_a_request_without_tools_sends_none() -> None:
    _, request = await run("openai", [choice({"content": "hi"}, "stop"), DONE])
    assert {"tools", "tool_choice", "parallel_tool_calls"}.isdisjoint(json.loads(request.content))


async def test_ollama_request_takes_arguments_as_objects_and_names_the_function_of_a_result() -> None:
    params = ChatParams(messages=ROUND_TRIP, model="m", max_tokens=64, tools=TOOLS)
    done = ollama_line({"role": "assistant", "content": "12 °C."}, done=True, done_reason="stop")
    _, request = await run("ollama", [done], params)
    body = json.loads(request.content)
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Zürich?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}]},
        {"role": "tool", "content": "12 °C, cloudy", "tool_name": "get_weather"},
    ]  # fmt: skip


async def test_a_whole_completion_with_tool_calls_becomes_the_same_events() -> None:
    whole = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ARGS}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ]
    }
    async with httpx.AsyncClient() as client:
        with respx.mock:
            respx.post(f"{OPENAI}/chat/completions").mock(return_value=httpx.Response(200, json=whole))
            provider = OpenAICompatibleProvider("local", OpenAIConfig(base_url=OPENAI), client)
            stream = await provider.open(ChatParams(messages=[ChatMessage("user", "x")], model="m"))
            events = [msgspec.to_builtins(e) async for batch in stream for e in batch]
            await stream.aclose()
    assert [e for e in events if "tool_call_delta" not in e] == EXPECTED_ONE_CALL
