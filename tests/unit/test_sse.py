"""The SSE decoder: one named test per rule of the spec, plus split-anywhere properties."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.sse import ServerSentEvent, SSEDecoder


def decode(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events


def msg(data: bytes, event: str = "message") -> ServerSentEvent:
    return ServerSentEvent(event, data)


def test_one_event_per_blank_line() -> None:
    assert decode(b"data: a\n\ndata: b\n\n") == [msg(b"a"), msg(b"b")]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_every_line_ending(eol: bytes) -> None:
    stream = b"data: x" + eol + b"data: y" + eol + eol + b"data: z" + eol + eol
    assert decode(stream) == [msg(b"x\ny"), msg(b"z")]


def test_mixed_line_endings() -> None:
    assert decode(b"data: a\r\n\rdata: b\n\r\n") == [msg(b"a"), msg(b"b")]


def test_crlf_split_across_reads_is_one_line_end() -> None:
    # If the "\n" after a read-ending "\r" counted as a second line end, the blank line
    # would dispatch "a" early and "b" would become a separate event.
    assert decode(b"data: a\r", b"\ndata: b\r\n\r\n") == [msg(b"a\nb")]


def test_cr_at_end_of_read_then_empty_read_then_lf() -> None:
    assert decode(b"data: a\r", b"", b"\ndata: b\r\n\r\n") == [msg(b"a\nb")]


def test_data_without_space_after_colon() -> None:
    assert decode(b"data:a\n\n") == [msg(b"a")]


def test_only_one_leading_space_is_removed() -> None:
    assert decode(b"data:  two\n\n") == [msg(b" two")]


def test_several_data_lines_join_with_newline() -> None:
    assert decode(b'data: {\ndata: "a": 1\ndata: }\n\n') == [msg(b'{\n"a": 1\n}')]


def test_field_without_colon_is_field_with_empty_value() -> None:
    assert decode(b"data\ndata\n\n") == [msg(b"\n")]


def test_comments_are_ignored() -> None:
    assert decode(b": keep-alive\n\n:ping\ndata: a\n\n") == [msg(b"a")]


def test_unknown_fields_id_and_retry_are_ignored() -> None:
    assert decode(b"id: 7\nretry: 100\nfoo: bar\ndata: a\n\n") == [msg(b"a")]


def test_event_name_is_kept_and_reset_after_dispatch() -> None:
    assert decode(b"event: error\ndata: boom\n\ndata: next\n\n") == [msg(b"boom", "error"), msg(b"next")]


def test_event_without_data_is_not_dispatched() -> None:
    assert decode(b"event: ping\n\ndata: a\n\n") == [msg(b"a")]


def test_empty_data_line_dispatches_empty_data() -> None:
    assert decode(b"data:\n\n") == [msg(b"")]


def test_unfinished_event_at_end_is_not_dispatched() -> None:
    assert decode(b"data: a\n\ndata: b\n") == [msg(b"a")]


def test_leading_bom_is_skipped_even_when_split() -> None:
    assert decode(b"\xef", b"\xbb", b"\xbfdata: a\n\n") == [msg(b"a")]


def test_bom_only_skipped_at_start() -> None:
    assert decode(b"data: a\n\n\xef\xbb\xbfdata: b\n\n") == [msg(b"a")]  # "\ufeffdata" is an unknown field


def test_done_marker_is_plain_data() -> None:
    assert decode(b"data: [DONE]\n\n") == [msg(b"[DONE]")]


def test_multibyte_character_split_inside_is_reassembled() -> None:
    text = "héllo — 日本 🙂".encode()
    stream = b'data: {"c":"' + text + b'"}\n\n'
    for cut in range(len(stream) + 1):
        assert decode(stream[:cut], stream[cut:]) == [msg(b'{"c":"' + text + b'"}')]


def test_unicode_line_separators_inside_json_do_not_split_lines() -> None:
    # U+2028, U+0085 and \x1c are line breaks for str.splitlines, not for SSE.
    payload = '{"c":"a\u2028b\u0085c\x1cd"}'.encode()
    assert decode(b"data: " + payload + b"\n\n") == [msg(payload)]


def test_events_are_returned_by_the_read_that_completes_them() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a") == []
    assert decoder.feed(b"bc\n") == []
    assert decoder.feed(b"\n") == [msg(b"abc")]


def test_long_event_in_many_small_reads_is_linear() -> None:
    # A quadratic decoder (re-scanning its buffer on every read) takes minutes here.
    decoder = SSEDecoder()
    start = time.perf_counter()
    decoder.feed(b"data: ")
    for _ in range(200_000):
        assert not decoder.feed(b"xxxxxxxxxx")
    events = decoder.feed(b"\n\n")
    elapsed = time.perf_counter() - start
    assert events == [msg(b"x" * 2_000_000)]
    assert elapsed < 10, f"feeding 2 MB in 10-byte reads took {elapsed:.1f}s"


# --- properties -------------------------------------------------------------------------

REALISTIC = (
    b'\xef\xbb\xbf: hello\r\n\r\ndata: {"choices":[{"delta":{"content":"h\xc3\xa9 \xe2\x80\xa8"}}]}\r\n\r\n'
    b"event: ping\n\n"
    b'data:{"a":1}\rdata: second line\r\r'
    b'id: 3\nevent: error\ndata: {"error": "\xf0\x9f\x99\x82 bad"}\n\n'
    b"data: [DONE]\n\n"
)


def test_realistic_stream_split_at_every_byte_gives_identical_events() -> None:
    whole = decode(REALISTIC)
    assert [e.event for e in whole] == ["message", "message", "error", "message"]
    for cut in range(len(REALISTIC) + 1):
        assert decode(REALISTIC[:cut], REALISTIC[cut:]) == whole, cut


def test_realistic_stream_fed_one_byte_at_a_time() -> None:
    assert decode(*(REALISTIC[i : i + 1] for i in range(len(REALISTIC)))) == decode(REALISTIC)


_line_bytes = st.binary(max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_lines = st.lists(
    st.one_of(
        _line_bytes.map(lambda b: b"data: " + b),
        _line_bytes.map(lambda b: b"data:" + b),
        _line_bytes.map(lambda b: b"event: " + b),
        _line_bytes.map(lambda b: b":" + b),
        _line_bytes,
        st.just(b""),
    ),
    max_size=25,
)


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    lines = draw(_lines)
    endings = draw(st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=len(lines), max_size=len(lines)))
    return b"".join(line + end for line, end in zip(lines, endings, strict=True))


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    pieces, last = [], 0
    for cut in [*cuts, len(data)]:
        pieces.append(data[last:cut])
        last = cut
    return pieces


@settings(max_examples=300, deadline=None)
@given(data=st.data(), stream=streams())
def test_any_split_gives_the_same_events(data: st.DataObject, stream: bytes) -> None:
    pieces = data.draw(splits(stream))
    assert decode(*pieces) == decode(stream)


@settings(max_examples=300, deadline=None)
@given(stream=st.binary(max_size=300), data=st.data())
def test_arbitrary_bytes_never_raise_and_split_does_not_matter(stream: bytes, data: st.DataObject) -> None:
    pieces = data.draw(splits(stream))
    events = decode(*pieces)
    assert events == decode(stream)
    assert all(isinstance(event.data, bytes) and event.event for event in events)


@settings(max_examples=200, deadline=None)
@given(payloads=st.lists(st.text(max_size=30), min_size=1, max_size=10), data=st.data())
def test_data_round_trips_for_any_text(payloads: list[str], data: st.DataObject) -> None:
    # Text without line breaks, one data line each, comes back byte for byte (leading spaces
    # beyond the one after the colon included).
    clean = [p.replace("\r", "").replace("\n", "") for p in payloads]
    stream = b"".join(b"data: " + p.encode() + b"\n\n" for p in clean)
    events = decode(*data.draw(splits(stream)))
    assert [e.data.decode() for e in events] == clean
