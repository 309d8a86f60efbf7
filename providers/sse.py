r"""Incremental Server-Sent Events decoder: bytes in as they arrive, complete events out.

Follows the WHATWG event-stream interpretation rules: ``\n``, ``\r\n`` and ``\r`` line ends
(a ``\r\n`` may be split across reads), ``field: value`` with or without the space, several
``data`` lines joined with ``\n``, comments and unknown fields ignored, an event with no data
not dispatched, a leading UTF-8 BOM skipped, and an unfinished event at end of stream dropped.

It works on bytes and never decodes text itself: line ends are ASCII, so splitting bytes at
them cannot cut a multi-byte UTF-8 character, and the JSON decoder takes the data bytes as
they are. Each byte is scanned once, on the read that brings it; only the unfinished last
line of a read is kept, so long events cost linear time.
"""

from __future__ import annotations

import re

import msgspec

__all__ = ("SSEDecoder", "ServerSentEvent")

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


class ServerSentEvent(msgspec.Struct, frozen=True, gc=False):
    """One dispatched event: its type (``message`` unless named) and its data bytes."""

    event: str
    data: bytes


def _whole_data_events(chunk: bytes) -> list[ServerSentEvent] | None:
    """The events of a read that is nothing but whole one-line ``data: …`` events (and comments).

    What real servers send nearly always; ``None`` for anything else, which the general path
    takes (the decoder must be between events, with nothing pending, for this to apply).
    """
    if not chunk.endswith(b"\n\n") or b"\r" in chunk:
        return None
    events: list[ServerSentEvent] = []
    for part in chunk.split(b"\n\n")[:-1]:
        if b"\n" in part:
            return None
        if part.startswith(b"data: "):
            events.append(ServerSentEvent("message", part[6:]))
        elif part[:1] != b":":
            return None
    return events


class SSEDecoder:
    """Feed it each network read with :meth:`feed`; it returns the events completed by that read."""

    __slots__ = ("_data", "_event", "_skip_lf", "_started", "_tail")

    def __init__(self) -> None:
        self._tail = bytearray()  # the unfinished last line
        self._data: list[bytes] = []
        self._event = b""
        self._skip_lf = False  # the previous read ended in "\r": a "\n" next is its other half
        self._started = False  # whether the leading BOM has been looked for

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Take the next bytes of the stream.

        Args:
            chunk: bytes exactly as read from the network, split anywhere.

        Returns:
            The events that these bytes completed, in order (often none or one).
        """
        if not self._tail and not self._data and not self._skip_lf and self._started and not self._event:
            fast = _whole_data_events(chunk)
            if fast is not None:
                return fast
        if not self._started:
            chunk = self._strip_bom(chunk)
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
        if not chunk:
            return []
        if b"\r" in chunk:
            lines = _LINE_END.split(chunk)
            self._skip_lf = chunk[-1] == 0x0D
        else:
            lines = chunk.split(b"\n")
        events: list[ServerSentEvent] = []
        last = len(lines) - 1
        if last == 0:
            self._tail += chunk
            return events
        tail = self._tail
        if tail:
            tail += lines[0]
            self._line(bytes(tail), events)
            tail.clear()
        else:
            self._line(lines[0], events)
        for i in range(1, last):
            self._line(lines[i], events)
        if lines[last]:
            tail += lines[last]
        return events

    def _strip_bom(self, chunk: bytes) -> bytes:
        pending = bytes(self._tail) + chunk
        if len(pending) < len(_BOM) and _BOM.startswith(pending):
            self._tail = bytearray(pending)  # too short to tell yet
            return b""
        self._started = True
        self._tail.clear()
        return pending[len(_BOM) :] if pending.startswith(_BOM) else pending

    def _line(self, line: bytes, events: list[ServerSentEvent]) -> None:
        if line.startswith(b"data: "):
            self._data.append(line[6:])
            return
        if not line:
            self._dispatch(events)
            return
        if line[0] == 0x3A:  # ":" starts a comment, e.g. ": keep-alive"
            return
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._event = value
        # "id" and "retry" steer reconnection, which a relay never does; other fields are ignored.

    def _dispatch(self, events: list[ServerSentEvent]) -> None:
        data = self._data
        if data:
            payload = data[0] if len(data) == 1 else b"\n".join(data)
            name = self._event.decode("utf-8", "replace") if self._event else "message"
            events.append(ServerSentEvent(name, payload))
            self._data = []
        self._event = b""
