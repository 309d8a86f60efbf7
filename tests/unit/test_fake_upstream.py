"""The fake upstream's framing helpers: bench model names, bench writes, one chunk per event."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.fake_upstream import (
    BENCH_FRAMINGS,
    BenchSpec,
    FakeUpstream,
    Reply,
    _bench_writes,
    _frame_events,
    bench_text,
    parse_bench_model,
    sse_chunks,
)


def dechunk(data: bytes) -> tuple[list[bytes], bool]:
    """The HTTP chunks in ``data`` and whether the terminating chunk ended it (nothing after)."""
    chunks: list[bytes] = []
    pos = 0
    while pos < len(data):
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol], 16)
        if size == 0:
            assert data[eol:] == b"\r\n\r\n"
            return chunks, True
        start = eol + 2
        chunks.append(data[start : start + size])
        assert data[start + size : start + size + 2] == b"\r\n"
        pos = start + size + 2
    return chunks, False


def events_of(chunks: list[bytes]) -> list[bytes]:
    return [ev + b"\n\n" for ev in b"".join(chunks).split(b"\n\n") if ev]


def text_of(events: list[bytes]) -> str:
    parts = []
    for ev in events:
        payload = ev.removeprefix(b"data: ").strip()
        if payload == b"[DONE]":
            continue
        for choice in json.loads(payload)["choices"]:
            parts.append(choice["delta"].get("content") or "")
    return "".join(parts)


# --------------------------------------------------------------------------- model names


def test_default_framing_is_event() -> None:
    assert BENCH_FRAMINGS[0] == "event"
    assert BenchSpec().framing == "event"
    spec = parse_bench_model("bench:tokens=500:per_write=50:delay_ms=0")
    assert spec == BenchSpec(tokens=500, per_write=50, delay_ms=0.0, framing="event")


@pytest.mark.parametrize(
    "spec",
    [
        BenchSpec(),
        BenchSpec(tokens=0),
        BenchSpec(tokens=500, per_write=50, delay_ms=0.0, framing="grouped"),
        BenchSpec(tokens=3, per_write=1, delay_ms=600_000.0, framing="event"),
        BenchSpec(tokens=200, per_write=1, delay_ms=2.5, framing="grouped"),
    ],
)
def test_model_name_round_trips(spec: BenchSpec) -> None:
    assert parse_bench_model(spec.model) == spec
    assert spec.model.endswith(f":framing={spec.framing}")


@pytest.mark.parametrize(
    "model",
    [
        "fake",
        "benchmark",
        "bench:framing=lines",
        "bench:framing",
        "bench:tokens=x",
        "bench:tokens=-1",
        "bench:per_write=0",
        "bench:delay_ms=-1",
        "bench:tokens=nan",
        "bench:tokens=inf",
        "bench:colour=red",
    ],
)
def test_other_names_are_not_bench_models(model: str) -> None:
    assert parse_bench_model(model) is None


# --------------------------------------------------------------------------- bench writes


@pytest.mark.parametrize("framing", BENCH_FRAMINGS)
@pytest.mark.parametrize(("tokens", "per_write"), [(0, 1), (1, 1), (7, 3), (10, 5), (10, 50)])
def test_bench_writes_carry_the_answer(framing: str, tokens: int, per_write: int) -> None:
    spec = BenchSpec(tokens=tokens, per_write=per_write, framing=framing)
    writes = _bench_writes(spec, spec.model)
    assert len(writes) == max(1, -(-tokens // per_write))
    chunks, ended = dechunk(b"".join(writes))
    assert ended
    events = events_of(chunks)
    assert text_of(events) == bench_text(tokens)
    assert events[-1] == b"data: [DONE]\n\n"
    # role + tokens + finish + usage + [DONE]
    assert len(events) == tokens + 4
    # only the last write ends the body
    for w in writes[:-1]:
        assert not dechunk(w)[1]


def test_event_framing_is_one_chunk_per_event() -> None:
    spec = BenchSpec(tokens=10, per_write=4, framing="event")
    writes = _bench_writes(spec, spec.model)
    per_write = [dechunk(w)[0] for w in writes]
    for chunks in per_write:
        assert all(c.endswith(b"\n\n") and c.count(b"\n\n") == 1 for c in chunks)
    # the role chunk rides with the first group, the tail (finish, usage, [DONE]) with the last
    assert [len(c) for c in per_write] == [1 + 4, 4, 2 + 3]
    assert b'"role":"assistant"' in per_write[0][0]
    assert per_write[-1][-1] == b"data: [DONE]\n\n"


def test_grouped_framing_is_one_chunk_per_write_and_one_for_the_tail() -> None:
    spec = BenchSpec(tokens=10, per_write=4, framing="grouped")
    writes = _bench_writes(spec, spec.model)
    per_write = [dechunk(w)[0] for w in writes]
    assert [len(c) for c in per_write] == [1, 1, 2]
    assert per_write[0][0].count(b"\n\n") == 5  # role + 4 tokens
    assert per_write[-1][-1].count(b"\n\n") == 3  # finish, usage, [DONE]


def test_framings_carry_the_same_bytes() -> None:
    event = BenchSpec(tokens=9, per_write=2, framing="event")
    grouped = BenchSpec(tokens=9, per_write=2, framing="grouped")
    model = "m"  # the same model name inside the events, so the payloads compare
    e = [b"".join(dechunk(w)[0]) for w in _bench_writes(event, model)]
    g = [b"".join(dechunk(w)[0]) for w in _bench_writes(grouped, model)]
    assert e == g


# --------------------------------------------------------------------------- Reply.chunk_per_event


def test_frame_events_splits_after_each_event() -> None:
    data = b"".join(sse_chunks(["a", "b"], per_write=10))
    chunks, ended = dechunk(_frame_events(data))
    assert not ended
    assert chunks == events_of([data])
    assert len(chunks) == 5  # role, a, b, finish, [DONE]


def test_frame_events_keeps_a_trailing_partial_event_as_its_own_chunk() -> None:
    chunks, _ = dechunk(_frame_events(b"data: 1\n\ndata: 2\n\n: partial\ndata: 3"))
    assert chunks == [b"data: 1\n\n", b"data: 2\n\n", b": partial\ndata: 3"]


def test_frame_events_of_data_without_an_event_end_is_one_chunk() -> None:
    assert _frame_events(b"data: {") == b"7\r\ndata: {\r\n"
    assert _frame_events(b"") == b""


async def _raw_response(up: FakeUpstream, model: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", up.port)
    body = json.dumps({"model": model, "stream": True}).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%b"
        % (len(body), body)
    )
    try:
        async with asyncio.timeout(5):
            data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    return data.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize("per_event", [False, True])
async def test_chunk_per_event_on_the_wire(per_event: bool) -> None:
    writes = sse_chunks(["a", "b", "c"], per_write=3)
    async with FakeUpstream() as up:
        up.on("m", Reply(writes=writes, chunk_per_event=per_event))
        chunks, ended = dechunk(await _raw_response(up, "m"))
    assert ended
    assert chunks == (events_of(writes) if per_event else writes)


@pytest.mark.parametrize("framing", BENCH_FRAMINGS)
async def test_bench_model_on_the_wire(framing: str) -> None:
    spec = BenchSpec(tokens=6, per_write=3, framing=framing)
    async with FakeUpstream() as up:
        chunks, ended = dechunk(await _raw_response(up, spec.model))
    assert ended
    assert text_of(events_of(chunks)) == bench_text(6)
    assert len(chunks) == (6 + 4 if framing == "event" else 3)
