"""The list's opaque cursor: the last conversation's ``(updated_at, id)``, base64url-encoded."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from app.errors import InvalidRequest

__all__ = ("Position", "decode_cursor", "encode_cursor")


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended: the list continues with what sorts after this pair (descending)."""

    updated_at: datetime
    id: uuid.UUID


def encode_cursor(position: Position) -> str:
    """An opaque string for ``position`` (it carries the exact stored time, to the microsecond)."""
    moment = position.updated_at.astimezone(UTC).isoformat(timespec="microseconds")
    raw = f"{moment}|{position.id.hex}".encode("ascii")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> Position:
    """The position a cursor from :func:`encode_cursor` names.

    Raises:
        InvalidRequest: ``cursor`` is not one this service made.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        moment, _, identifier = raw.partition("|")
        updated_at = datetime.fromisoformat(moment)
        if updated_at.tzinfo is None:
            raise ValueError("no time zone")
        return Position(updated_at, uuid.UUID(hex=identifier))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("malformed cursor: pass the next_cursor of a previous page as it was") from None
