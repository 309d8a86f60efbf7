"""Resume as a chat feature: every stored answer is kept live while it streams, and outlives its client.

Per answer: ``started`` (after history named the conversation in ``meta``) registers it and
marks the chat to keep running when its client leaves; ``batch`` appends to it; ``finishing``
gives followers the terminal event of a stop; ``released`` forgets it. An answer that is not
stored (``store: false``, persistence off) takes no part: it stops when its client leaves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from app.chat.hooks import ChatObserver, Outcome
from app.streams.live import LiveAnswer, LiveAnswers
from providers.events import ChatEvent, DoneEvent, ErrorEvent, MetaEvent

if TYPE_CHECKING:
    from app.chat.run import Chat

__all__ = ("ResumeFeature",)


class ResumeFeature:
    """Keeps each stored answer resumable (``streams.resume = true``)."""

    __slots__ = ("answers",)

    def __init__(self, answers: LiveAnswers) -> None:
        self.answers = answers

    async def admit(self, chat: Chat) -> ChatObserver | None:
        return _Resumable(self.answers)


class _Resumable(ChatObserver):
    __slots__ = ("_answer", "_answers")

    def __init__(self, answers: LiveAnswers) -> None:
        self._answers = answers
        self._answer: LiveAnswer | None = None

    async def started(self, chat: Chat) -> None:
        meta = chat.meta
        if meta is None or isinstance(meta.conversation_id, msgspec.UnsetType):
            return  # not stored: nothing to resume from, and it stops with its client
        external = chat.plan.external
        answer = LiveAnswer(chat, chat.principal.name, meta.conversation_id, external.chat_id if external else None)
        answer.append((MetaEvent(meta),))  # what the original stream's first line was
        self._answer = answer
        self._answers.add(answer)
        chat.detach_on_disconnect = True

    def batch(self, events: Sequence[ChatEvent]) -> None:
        if self._answer is not None:
            self._answer.append(events)

    async def finishing(self, chat: Chat, outcome: Outcome) -> None:
        answer = self._answer
        if answer is None:
            return
        if outcome.error is not None and outcome.kind != "complete":
            answer.end(ErrorEvent(outcome.error))
        else:
            answer.end(DoneEvent(True, outcome.finish_reason or "cancelled"))

    async def released(self, chat: Chat, outcome: Outcome) -> None:
        if self._answer is not None:
            self._answers.remove(self._answer)
