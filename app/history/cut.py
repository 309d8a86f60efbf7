"""Which stored turns go upstream: the newest that fit ``history.max_messages`` and ``history.max_chars``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

__all__ = ("Turn", "cut_history")


class Turn(Protocol):
    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


T = TypeVar("T", bound=Turn)


def cut_history(newest_first: Sequence[T], max_messages: int, max_chars: int) -> list[T]:
    """The turns to send, oldest first: whole turns dropped from the oldest end until both limits hold.

    A ``tool`` turn left at the front would answer an assistant turn that was cut away, so it goes too.

    Args:
        newest_first: the eligible stored turns, newest first (at least the ``max_messages`` newest).
        max_messages: the most turns to keep.
        max_chars: the most characters of ``content`` the kept turns may hold together.

    Returns:
        The kept turns, oldest first.
    """
    kept = 0
    chars = 0
    for turn in newest_first[:max_messages]:
        chars += len(turn.content)
        if chars > max_chars:
            break
        kept += 1
    while kept and newest_first[kept - 1].role == "tool":
        kept -= 1
    return list(reversed(newest_first[:kept]))
