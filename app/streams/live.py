"""Answers streaming right now, kept so that a client that reloads can re-attach (CONTRACT §13, resume).

Each stored answer that streams while ``streams.resume`` is on is a :class:`LiveAnswer`: the
events sent so far (appended per batch, one upstream read, never per token) and a way to wait
for more. A reader replays what is there, then follows until the terminal event. The
:class:`LiveAnswers` of a process find them by conversation, always within the principal that
owns them (a client's chat id names a conversation: the store says which).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Final

from providers.events import ChatEvent, DoneEvent, ErrorEvent

if TYPE_CHECKING:
    from app.chat.run import Chat

__all__ = ("FOLLOW_IDLE_SECONDS", "LiveAnswer", "LiveAnswers")

_TERMINAL: Final = (DoneEvent, ErrorEvent)
#: A reader that hears nothing for this long gives up (the producer died without a terminal).
FOLLOW_IDLE_SECONDS: Final = 300.0


class LiveAnswer:
    """One streaming answer: its events so far, and its followers' wake-up."""

    __slots__ = ("_more", "chat", "conversation_id", "ended", "events", "owner")

    def __init__(self, chat: Chat, owner: str, conversation_id: str) -> None:
        self.chat = chat
        self.owner = owner
        self.conversation_id = conversation_id
        self.events: list[ChatEvent] = []
        self.ended = False
        self._more = asyncio.Event()

    def append(self, batch: Sequence[ChatEvent]) -> None:
        """Add one batch (synchronous and cheap: it runs once per upstream read)."""
        if self.ended:
            return
        self.events.extend(batch)
        if isinstance(batch[-1], _TERMINAL):
            self.ended = True
        self._more.set()

    async def follow(self) -> AsyncIterator[Sequence[ChatEvent]]:
        """Everything so far as one batch, then each new batch, until the terminal event."""
        sent = 0
        while True:
            events = self.events
            if sent < len(events):
                batch = events[sent:]
                sent = len(events)
                yield batch
                continue
            if self.ended:
                return
            self._more.clear()
            if sent < len(self.events) or self.ended:  # appended while we were yielding
                continue
            try:
                async with asyncio.timeout(FOLLOW_IDLE_SECONDS):
                    await self._more.wait()
            except TimeoutError:
                return


class LiveAnswers:
    """The live answers of this process, by owner and conversation."""

    __slots__ = ("_by_conversation",)

    def __init__(self) -> None:
        self._by_conversation: dict[tuple[str, str], LiveAnswer] = {}

    def add(self, answer: LiveAnswer) -> None:
        self._by_conversation[(answer.owner, answer.conversation_id)] = answer

    def remove(self, answer: LiveAnswer) -> None:
        if self._by_conversation.get((answer.owner, answer.conversation_id)) is answer:
            del self._by_conversation[(answer.owner, answer.conversation_id)]

    def of_conversation(self, owner: str, conversation_id: str) -> LiveAnswer | None:
        return self._by_conversation.get((owner, conversation_id))

    def all(self) -> list[LiveAnswer]:
        return list(self._by_conversation.values())

    def __len__(self) -> int:
        return len(self._by_conversation)
