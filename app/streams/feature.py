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
from app.streams.redis import RedisAnswer, RedisStreams
from providers.events import ChatEvent, DoneEvent, ErrorEvent, MetaEvent

if TYPE_CHECKING:
    from app.chat.run import Chat

__all__ = ("ResumeFeature",)


class ResumeFeature:
    """Keeps each stored answer resumable (``streams.resume = true``)."""

    __slots__ = ("answers", "redis")

    def __init__(self, answers: LiveAnswers, redis: RedisStreams | None = None) -> None:
        self.answers = answers
        self.redis = redis
        """Where other replicas find this process's answers (``None``: one process, no Redis)."""

    async def admit(self, chat: Chat) -> ChatObserver | None:
        return _Resumable(self.answers, self.redis)


class _Resumable(ChatObserver):
    __slots__ = ("_answer", "_answers", "_redis", "_remote")

    def __init__(self, answers: LiveAnswers, redis: RedisStreams | None) -> None:
        self._answers = answers
        self._redis = redis
        self._answer: LiveAnswer | None = None
        self._remote: RedisAnswer | None = None

    async def started(self, chat: Chat) -> None:
        meta = chat.meta
        if meta is None or isinstance(meta.conversation_id, msgspec.UnsetType):
            return  # not stored: nothing to resume from, and it stops with its client
        answer = LiveAnswer(chat, chat.principal.name, meta.conversation_id)
        first = (MetaEvent(meta),)  # what the original stream's first line was
        answer.append(first)
        self._answer = answer
        self._answers.add(answer)
        chat.detach_on_disconnect = True
        if self._redis is not None:
            answer_id = meta.message_id if isinstance(meta.message_id, str) else meta.conversation_id
            self._remote = await self._redis.publish(answer.owner, answer.conversation_id, answer_id, first)

    def batch(self, events: Sequence[ChatEvent]) -> None:
        if self._answer is not None:
            self._answer.append(events)
            if self._remote is not None:
                self._remote.add(events)

    async def finishing(self, chat: Chat, outcome: Outcome) -> None:
        answer = self._answer
        if answer is None:
            return
        last: tuple[ChatEvent, ...] | None = None
        if not answer.ended:  # stopped: its terminal event did not pass through batch
            terminal: ChatEvent = (
                ErrorEvent(outcome.error)
                if outcome.error is not None
                else DoneEvent(True, outcome.finish_reason or "cancelled")
            )
            last = (terminal,)
            answer.append(last)
        if self._remote is not None:
            await self._remote.end(last)

    async def released(self, chat: Chat, outcome: Outcome) -> None:
        if self._answer is not None:
            self._answers.remove(self._answer)
