r"""Incremental NDJSON line splitting: bytes in as they arrive, complete lines out.

Lines end at ``\n`` and nowhere else: not at U+2028, U+0085 or ``\x1c``, which may appear raw
inside JSON strings and which ``str.splitlines`` (and so httpx's ``aiter_lines``) would split
on. It works on bytes and never decodes text: ``\n`` is ASCII, so splitting at it cannot cut a
multi-byte UTF-8 character, and the JSON decoder takes each line's bytes as they are (a ``\r``
before the ``\n`` is JSON whitespace). Each byte is scanned once, on the read that brings it;
only the unfinished last line is kept.
"""

from __future__ import annotations

__all__ = ("NDJSONLines",)


class NDJSONLines:
    """Feed it each network read with :meth:`feed`; it returns the lines that read completed."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = bytearray()  # the unfinished last line

    def feed(self, chunk: bytes) -> list[bytes]:
        r"""Take the next bytes of the body.

        Args:
            chunk: bytes exactly as read from the network, split anywhere.

        Returns:
            The lines that these bytes completed, in order, without their ``\n`` (often none or one).
        """
        if b"\n" not in chunk:
            self._tail += chunk
            return []
        lines = chunk.split(b"\n")
        tail = self._tail
        if tail:
            tail += lines[0]
            lines[0] = bytes(tail)
            tail.clear()
        last = lines.pop()
        if last:
            tail += last
        return lines

    def rest(self) -> bytes:
        r"""What came after the last ``\n`` (a last line the body did not end with one); emptied."""
        rest = bytes(self._tail)
        self._tail.clear()
        return rest
