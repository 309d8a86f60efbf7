"""Where features hang on an answer's lifetime: admission, start, each batch, the end, release.

A feature (history, rate limits, metrics, resume…) is a :class:`ChatFeature`: the pipeline asks
it to :meth:`~ChatFeature.admit` each chat before the upstream is called, and it may refuse
(raise an ``AgentError``: 409, 429, 503…) or answer with a :class:`ChatObserver`, a per-answer
object whose methods the pipeline calls at fixed moments, each exactly once except ``batch``:

1. ``started`` — the upstream said yes; ``chat.meta`` may still gain keys (``conversation_id``).
2. ``batch`` — after each batch was handed to the transport; synchronous and cheap (per read).
3. ``finishing`` — the answer has ended (any outcome), before its terminal line goes out: the
   place for a final write that a client's next request must see.
4. ``released`` — the upstream is closed; on every outcome, including a refusal before start.

``finishing`` and ``released`` run shielded from cancellation; an exception in any of them is
logged and never cuts the stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Protocol

import msgspec

from providers.events import ChatEvent, ErrorInfo

if TYPE_CHECKING:
    from app.chat.run import Chat

__all__ = ("ChatFeature", "ChatObserver", "Outcome", "OutcomeKind")

#: How an answer ended. ``refused``: before the stream started (an HTTP error); ``client_gone``:
#: the client left (nothing more was sent); ``cancelled``: a cancel or stop request;
#: ``shutdown``: the service stopped it.
OutcomeKind = Literal["complete", "error", "cancelled", "shutdown", "client_gone", "refused"]


class Outcome(msgspec.Struct, frozen=True, gc=False):
    """How one answer ended; ``error`` for ``error``, ``refused`` and ``shutdown``."""

    kind: OutcomeKind
    finish_reason: str | None = None
    error: ErrorInfo | None = None

    @property
    def code(self) -> str:
        """The outcome as one word for logs and metrics: ``complete``, an error code, or the kind."""
        return self.error.code if self.error is not None else self.kind

    @property
    def interrupted(self) -> bool:
        """The answer stopped before its end (what was sent so far is all there is)."""
        return self.kind in ("cancelled", "shutdown", "client_gone")


class ChatObserver:
    """One feature's part in one answer; override what the feature needs (see the module docstring)."""

    __slots__ = ()

    async def started(self, chat: Chat) -> None:
        return None

    def batch(self, events: Sequence[ChatEvent]) -> None:
        return None

    async def finishing(self, chat: Chat, outcome: Outcome) -> None:
        return None

    async def released(self, chat: Chat, outcome: Outcome) -> None:
        return None


class ChatFeature(Protocol):
    """A feature that takes part in every chat, whatever the transport."""

    async def admit(self, chat: Chat) -> ChatObserver | None:
        """Let ``chat`` go ahead (with an observer, or ``None`` to stay out of it), or raise to refuse it."""
        ...
