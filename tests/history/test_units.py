"""The pure parts of persistence: the history cut, the cursor, titles, times, the request's new fields."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.chat.request import parse_chat_request, stores
from app.config import Limits
from app.errors import InvalidRequest
from app.history.cursor import Position, decode_cursor, encode_cursor
from app.history.cut import cut_history
from app.history.database import display_url
from app.history.feature import title_of
from app.history.schemas import rfc3339


@dataclass(frozen=True)
class T:
    role: str
    content: str


turns = st.lists(st.builds(T, st.sampled_from(["user", "assistant", "tool"]), st.text(max_size=30)), max_size=40)


@given(turns, st.integers(1, 50), st.integers(1, 400))
def test_cut_keeps_the_newest_whole_turns_within_both_limits(
    newest_first: list[T], max_messages: int, max_chars: int
) -> None:
    kept = cut_history(newest_first, max_messages, max_chars)
    n = len(kept)
    # oldest first, a suffix of the conversation: exactly the n newest, reversed
    assert kept == list(reversed(newest_first[:n]))
    assert n <= max_messages
    assert sum(len(t.content) for t in kept) <= max_chars
    assert not kept or kept[0].role != "tool"  # never a tool turn without the call it answers
    # maximal: one more (older) turn would break a limit, or only orphaned tool turns were dropped
    fits = 0
    total = 0
    for turn in newest_first[:max_messages]:
        total += len(turn.content)
        if total > max_chars:
            break
        fits += 1
    assert all(t.role == "tool" for t in newest_first[n:fits])


def test_cut_examples() -> None:
    history = [T("user", "c"), T("assistant", "bb"), T("user", "aaaa")]  # newest first
    assert cut_history(history, 50, 1000) == list(reversed(history))
    assert cut_history(history, 2, 1000) == [T("assistant", "bb"), T("user", "c")]
    assert cut_history(history, 50, 3) == [T("assistant", "bb"), T("user", "c")]
    assert cut_history(history, 50, 1) == [T("user", "c")]
    assert cut_history([T("user", "x" * 10)], 50, 5) == []
    assert cut_history([T("user", "q"), T("tool", "r"), T("assistant", "call")], 2, 100) == [T("user", "q")]


@given(st.datetimes(timezones=st.just(UTC)), st.uuids())
def test_cursor_round_trips_exactly(moment: datetime, identifier: uuid.UUID) -> None:
    position = Position(moment, identifier)
    cursor = encode_cursor(position)
    assert cursor.isascii() and "=" not in cursor
    assert decode_cursor(cursor) == position


@given(st.one_of(st.text(max_size=60), st.binary(max_size=45).map(lambda raw: raw.hex())))
def test_any_other_cursor_is_a_clear_400_never_a_crash(garbage: str) -> None:
    with pytest.raises(InvalidRequest, match="cursor"):  # anything else raised here would be a 500
        decode_cursor(garbage)


@pytest.mark.parametrize(
    ("message", "title"),
    [
        ("Hello", "Hello"),
        ("  Hello \n\t world  ", "Hello world"),
        ("a" * 100, "a" * 80),
        ("   ", ""),
        (" x" * 50, ("x " * 50).strip()[:80]),  # cut after trimming: it may end in a space
        ("🌊" * 90, "🌊" * 80),
    ],
)
def test_title_is_the_first_message_collapsed_trimmed_cut_to_80(message: str, title: str) -> None:
    assert title_of(message) == title


def test_times_are_rfc3339_utc_milliseconds() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert rfc3339(moment) == "2026-01-02T03:04:05.123Z"
    assert rfc3339(moment.astimezone(UTC) + timedelta(hours=0)) == "2026-01-02T03:04:05.123Z"


def test_store_defaults_follow_messages() -> None:
    limits = Limits()
    assert stores(parse_chat_request({"message": "hi"}, limits)) is True
    assert stores(parse_chat_request({"messages": [{"role": "user", "content": "hi"}]}, limits)) is False
    assert stores(parse_chat_request({"message": "hi", "store": False}, limits)) is False
    assert stores(parse_chat_request({"messages": [{"role": "user", "content": "x"}], "store": True}, limits)) is True
    with pytest.raises(InvalidRequest, match="store"):
        parse_chat_request({"message": "hi", "store": "yes"}, limits)
    with pytest.raises(InvalidRequest, match="conversation_id"):
        parse_chat_request({"message": "hi", "conversation_id": 7}, limits)
    with pytest.raises(InvalidRequest, match="conversation_id"):
        parse_chat_request({"messages": [], "conversation_id": str(uuid.uuid4()), "message": "x"}, limits)


def test_database_urls_are_shown_without_their_password() -> None:
    shown = display_url("postgresql+asyncpg://app:s3cret-pw@db.internal:5432/agent")
    assert "s3cret" not in shown
    assert shown.startswith("postgresql+asyncpg://app:")
    assert "db.internal:5432/agent" in shown
    assert display_url("sqlite+aiosqlite:///agent-backend.db") == "sqlite+aiosqlite:///agent-backend.db"
