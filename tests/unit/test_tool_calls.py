"""The tool-call tracker: every server's way of labelling fragments gives the same calls."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.events import ToolCall, ToolCallDelta, ToolCallDeltaEvent, ToolCallEvent
from providers.tool_calls import ToolCallFragment, ToolCallTracker, arguments_text

F = ToolCallFragment
WEATHER = '{"city": "Zürich", "unit": "°C"}'


def run(chunks: list[list[ToolCallFragment]]) -> tuple[list[ToolCallDelta], list[ToolCall]]:
    tracker = ToolCallTracker()
    deltas = [event.tool_call_delta for chunk in chunks for event in tracker.feed(chunk)]
    return deltas, [event.tool_call for event in tracker.finish()]


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize(
    "chunks",
    [
        # OpenAI / llama.cpp --jinja: id, name and "" first, then index + argument fragments.
        [
            [F(index=0, id="call_1", name="get_weather", arguments="")],
            *([F(index=0, arguments=p)] for p in pieces(WEATHER, 5)),
        ],
        # vLLM: id "" on later fragments.
        [
            [F(index=0, id="call_1", name="get_weather")],
            *([F(index=0, id="", arguments=p)] for p in pieces(WEATHER, 3)),
        ],
        # LM Studio: name "" on argument fragments.
        [
            [F(index=0, id="call_1", name="get_weather")],
            *([F(index=0, name="", arguments=p)] for p in pieces(WEATHER, 7)),
        ],
        # Google: no index at all.
        [[F(id="call_1", name="get_weather", arguments=WEATHER[:10])], [F(arguments=WEATHER[10:])]],
        # Ollama: the whole call in one chunk.
        [[F(id="call_1", name="get_weather", arguments=WEATHER)]],
    ],
    ids=["openai", "vllm", "lmstudio", "google", "ollama"],
)
def test_every_quirk_gives_the_same_complete_call(chunks: list[list[ToolCallFragment]]) -> None:
    deltas, calls = run(chunks)
    assert calls == [ToolCall(index=0, id="call_1", name="get_weather", arguments=WEATHER)]
    assert deltas[0].id == "call_1"
    assert deltas[0].name == "get_weather"
    assert all(d.index == 0 for d in deltas)
    assert all(d.id is msgspec.UNSET and d.name is msgspec.UNSET for d in deltas[1:])  # on the first only
    assert "".join(d.arguments for d in deltas) == WEATHER


def test_parallel_calls_sharing_index_zero_with_distinct_ids() -> None:
    _, calls = run(
        [
            [
                F(index=0, id="a", name="get_weather", arguments='{"city":"Paris"}'),
                F(index=0, id="b", name="get_time", arguments='{"zone":"CET"}'),
            ]
        ]
    )
    assert calls == [
        ToolCall(index=0, id="a", name="get_weather", arguments='{"city":"Paris"}'),
        ToolCall(index=1, id="b", name="get_time", arguments='{"zone":"CET"}'),
    ]


def test_interleaved_parallel_calls_by_index() -> None:
    _, calls = run(
        [
            [F(index=0, id="a", name="f"), F(index=1, id="b", name="g")],
            [F(index=1, arguments='{"y"'), F(index=0, arguments='{"x"')],
            [F(index=0, arguments=":1}"), F(index=1, arguments=":2}")],
        ]
    )
    assert [(c.index, c.id, c.arguments) for c in calls] == [(0, "a", '{"x":1}'), (1, "b", '{"y":2}')]


def test_our_index_is_the_order_of_first_appearance_not_the_upstreams() -> None:
    _, calls = run(
        [[F(index=3, id="late", name="f", arguments="{}")], [F(index=1, id="early", name="g", arguments="{}")]]
    )
    assert [(c.index, c.id) for c in calls] == [(0, "late"), (1, "early")]


def test_a_missing_id_is_made_once_per_call() -> None:
    deltas, calls = run([[F(index=0, name="f", arguments='{"a"')], [F(index=0, arguments=":1}")]])
    assert calls[0].id.startswith("call_")
    assert deltas[0].id == calls[0].id
    assert calls[0].arguments == '{"a":1}'


def test_arguments_before_the_name_wait_for_it() -> None:
    deltas, calls = run([[F(index=0, id="c", arguments='{"q":')], [F(index=0, name="search", arguments='"x"}')]])
    assert deltas == [ToolCallDelta(index=0, id="c", name="search", arguments='{"q":"x"}')]
    assert calls == [ToolCall(index=0, id="c", name="search", arguments='{"q":"x"}')]


def test_calls_are_not_finalised_because_the_arguments_parse() -> None:
    tracker = ToolCallTracker()
    events = tracker.feed([F(index=0, id="c", name="f", arguments="{}")])
    assert all(isinstance(event, ToolCallDeltaEvent) for event in events)
    events = tracker.feed([F(index=0, arguments=" ")])  # "{} " still parses; the call is not over
    assert events == [ToolCallDeltaEvent(ToolCallDelta(index=0, arguments=" "))]
    assert tracker.finish() == [ToolCallEvent(ToolCall(index=0, id="c", name="f", arguments="{} "))]


def test_no_calls_means_nothing_to_finish() -> None:
    tracker = ToolCallTracker()
    assert not tracker
    assert tracker.finish() == []


def test_object_arguments_are_encoded_compactly() -> None:
    assert arguments_text({"city": "Zürich", "n": [1, 2]}) == '{"city":"Zürich","n":[1,2]}'
    assert arguments_text('{"as": "written"}') == '{"as": "written"}'
    assert arguments_text(None) == ""


@given(text=st.text(min_size=1, max_size=80), cuts=st.lists(st.integers(0, 80), max_size=10))
def test_arguments_split_anywhere_are_joined_exactly(text: str, cuts: list[int]) -> None:
    points = sorted({c for c in cuts if 0 < c < len(text)})
    parts = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    deltas, calls = run([[F(index=0, id="c", name="f")], *([F(index=0, arguments=p)] for p in parts)])
    assert calls[0].arguments == text
    assert "".join(d.arguments for d in deltas) == text
    json.dumps(calls[0].arguments)  # any text, however cut, survives as a JSON string
