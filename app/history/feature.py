"""Conversation history as a chat feature: stored turns go upstream, and every answer is stored as it streams.

Per answer: ``admit`` claims the conversation and stores the user's message before the upstream
is called; ``started`` names the stored ids in ``meta``; ``batch`` only appends text to memory;
a writer task stores the answer's row, then a checkpoint (text and heartbeat) at most every
``history.checkpoint_seconds``; ``finishing`` makes the final write before the terminal line goes
out (retried once). Nothing is written per token, and no database failure cuts a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import msgspec

from app.chat.hooks import ChatObserver, Outcome
from app.chat.request import stores
from app.chat.tools import check_tool_turns
from app.errors import InvalidRequest, NotFound, StorageUnavailable
from app.history.store import Claim, Ending, HistoryStore, StoredTurn
from providers.base import ChatMessage, ChatParams, ToolTurnCall
from providers.events import ChatEvent, DeltaEvent, DoneEvent, ReasoningEvent, ToolCallEvent

if TYPE_CHECKING:
    from app.chat.run import Chat

__all__ = ("PERSISTENCE_OFF", "HistoryFeature", "HistoryOff", "title_of")

logger = logging.getLogger("app.history")

PERSISTENCE_OFF: Final = "conversation history is off (database.enabled = false): nothing is stored"
_TITLE_CHARS: Final = 80
_WHITESPACE: Final = re.compile(r"\s+")
_RETRY_PAUSE_SECONDS: Final = 0.1
_ROW_AFTER_SECONDS: Final = 0.1
_COMPACT_AT: Final = 1024
"""Pieces of streamed text kept apart before they are joined (between checkpoints)."""


def title_of(message: str) -> str:
    """A new conversation's title: the first message, whitespace runs collapsed, trimmed, its first 80 characters."""
    return _WHITESPACE.sub(" ", message).strip()[:_TITLE_CHARS]


def conversation_uuid(value: str) -> uuid.UUID:
    """The UUID a conversation id names.

    Raises:
        NotFound: it is not a UUID (so it names no conversation).
    """
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("no such conversation (conversation ids are UUIDs)") from None


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value is not None else None
    except ValueError:
        return None


def with_history(chat: Chat, turns: Sequence[StoredTurn], *, own: bool = True) -> ChatParams:
    """What goes upstream: the request's ``system`` first, the stored turns, then the request's own turns.

    ``own=False`` leaves the request's own turns out (a regenerate answers the stored history again).
    """
    params = chat.params
    if not turns and own:
        return params
    head = 1 if chat.plan.request.system is not None else 0
    stored = [_upstream_turn(turn) for turn in turns]
    mine = params.messages[head:] if own else []
    return msgspec.structs.replace(params, messages=[*params.messages[:head], *stored, *mine])


def _upstream_turn(turn: StoredTurn) -> ChatMessage:
    if turn.tool_calls:
        calls = msgspec.convert(turn.tool_calls, list[ToolTurnCall])
        return ChatMessage("assistant", turn.content or None, tool_calls=calls)
    return ChatMessage(turn.role, turn.content, tool_call_id=turn.tool_call_id)  # type: ignore[arg-type]


def _stored_turn(turn: ChatMessage) -> StoredTurn:
    calls = msgspec.to_builtins(turn.tool_calls) if turn.tool_calls else None
    return StoredTurn(turn.role, turn.content or "", tool_calls=calls, tool_call_id=turn.tool_call_id)


def _check_tool_answers(chat: Chat, history: Sequence[StoredTurn]) -> None:
    """A stored conversation continued with ``tool`` turns: each answers a call of its last assistant turn.

    Raises:
        InvalidRequest: a tool turn answers no call of that turn.
    """
    last = next((turn for turn in reversed(history) if turn.role == "assistant"), None)
    calls = [call["id"] for call in last.tool_calls or ()] if last is not None else []
    check_tool_turns(chat.plan.request.messages or (), answered=calls)


def _request_turns(chat: Chat) -> list[StoredTurn]:
    """The request's own turns to store: its ``messages`` (a stateless client asking to store) and ``message``.

    ``system`` applies to the one request that carries it, so system turns are not kept.
    """
    request = chat.plan.request
    turns = [_stored_turn(turn) for turn in request.messages or () if turn.role != "system"]
    if request.message is not None:
        turns.append(StoredTurn("user", request.message))
    return turns


class HistoryOff:
    """The feature when ``database.enabled = false``: chats stay stateless, and naming a conversation is a 404."""

    __slots__ = ()

    async def admit(self, chat: Chat) -> ChatObserver | None:
        if chat.plan.request.conversation_id is not None:
            raise NotFound(f"no such conversation: {PERSISTENCE_OFF}")
        return None

    async def check(self) -> str:
        """For ``/ready``: there is no database to check."""
        return "disabled"


class HistoryFeature:
    """Stores every answer that asks to be stored, and puts a conversation's history in front of a chat on it."""

    __slots__ = ("store",)

    def __init__(self, store: HistoryStore) -> None:
        self.store = store

    async def admit(self, chat: Chat) -> ChatObserver | None:
        request = chat.plan.request
        identifier = conversation_uuid(request.conversation_id) if request.conversation_id is not None else None
        owner = chat.plan.principal.name
        external = chat.plan.external
        if external is not None:
            identifier = await self.store.find_external(owner, external.chat_id)
            if identifier is not None and external.regenerate:
                return await self._regenerate(chat, owner, identifier, _uuid_or_none(external.answer_id))
        if request.messages and (identifier is not None or external is not None):
            # Tool results for the stored conversation's last answer: checked against its calls
            # before anything of this request is stored (a chat id never used has no calls).
            _check_tool_answers(chat, await self.store.history(owner, identifier) if identifier is not None else [])
        if not stores(request):
            if identifier is not None:
                chat.params = with_history(chat, await self.store.history(owner, identifier))
            return None
        turns = _request_turns(chat)
        title = next((title_of(turn.content) for turn in turns if turn.role == "user"), "")
        new_name = external.chat_id if external is not None and identifier is None else None
        claim = await self.store.begin(owner, identifier, turns, title, new_name)
        chat.params = with_history(chat, claim.history)
        return AnswerRecorder(self.store, claim)

    async def _regenerate(
        self, chat: Chat, owner: str, identifier: uuid.UUID, answer_id: uuid.UUID | None
    ) -> ChatObserver:
        """Answer the stored history again in place of ``answer_id`` (else the last answer) and what follows.

        The request's own turns are the client's copy of what is stored: nothing new is stored
        but the answer. What was removed comes back if the new answer fails before it streams.
        """
        removed = await self.store.rewind(owner, identifier, answer_id)
        try:
            claim = await self.store.begin(owner, identifier, (), "")
        except BaseException:
            await self.store.restore(identifier, removed)
            raise
        if not claim.history or claim.history[-1].role not in ("user", "tool"):
            await self.store.abandon(claim)
            await self.store.restore(identifier, removed)
            raise InvalidRequest("nothing to regenerate: the chat holds no question to answer again")
        chat.params = with_history(chat, claim.history, own=False)
        return AnswerRecorder(self.store, claim, restore=removed)

    async def check(self) -> str:
        """For ``/ready``: ``"ok"`` when the database answers a query, else a short reason."""
        return await self.store.database.check()


class AnswerRecorder(ChatObserver):
    """Stores one answer: its row when the stream starts, checkpoints while it streams, the final write."""

    __slots__ = (
        "_claim",
        "_failed",
        "_first_write",
        "_model",
        "_provider",
        "_reasoning",
        "_restore",
        "_saved",
        "_started",
        "_stopping",
        "_store",
        "_text",
        "_tool_calls",
        "_usage",
        "_wake",
        "_writer",
    )

    def __init__(self, store: HistoryStore, claim: Claim, *, restore: Sequence[dict[str, Any]] = ()) -> None:
        self._store = store
        self._claim = claim
        self._restore = restore
        """What a regenerate removed: put back if this answer never starts."""
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._usage: dict[str, int] | None = None
        self._tool_calls: list[dict[str, object]] | None = None
        self._model = ""
        self._provider = ""
        self._started = False
        self._stopping = False
        self._failed = False
        self._saved = (0, 0)
        """Characters of text and reasoning at the last checkpoint."""
        self._wake = asyncio.Event()
        self._first_write: asyncio.TimerHandle | None = None
        # From the claim on, the heartbeat goes: a long prompt prefill is not a dead stream.
        self._writer = asyncio.create_task(self._write_while_streaming())

    async def started(self, chat: Chat) -> None:
        meta = chat.meta
        assert meta is not None
        self._model, self._provider = meta.model, meta.provider
        claim = self._claim
        chat.meta = msgspec.structs.replace(
            meta, conversation_id=str(claim.conversation_id), message_id=str(claim.assistant_message_id)
        )
        self._started = True
        # The row is written once the first batch went out (or soon after the start, if it is
        # slow to come), so that the write never competes with the first delta.
        self._first_write = asyncio.get_running_loop().call_later(_ROW_AFTER_SECONDS, self._wake.set)

    def batch(self, events: Sequence[ChatEvent]) -> None:
        if self._first_write is not None:
            self._first_write.cancel()
            self._first_write = None
            self._wake.set()
        for event in events:
            if type(event) is DeltaEvent:
                self._text.append(event.delta)
            elif type(event) is ReasoningEvent:
                self._reasoning.append(event.reasoning)
            elif type(event) is ToolCallEvent:
                call = event.tool_call
                function = {"name": call.name, "arguments": call.arguments}
                if self._tool_calls is None:
                    self._tool_calls = []
                self._tool_calls.append({"id": call.id, "type": "function", "function": function})
            elif type(event) is DoneEvent and not isinstance(event.usage, msgspec.UnsetType):
                self._usage = msgspec.to_builtins(event.usage)
        # One str object per token costs ~60 bytes beyond its text: a fast stream between two
        # checkpoints is kept as a few joined pieces instead (each join is amortised over 1024 tokens).
        if len(self._text) > _COMPACT_AT:
            self._text[:] = ["".join(self._text)]
        if len(self._reasoning) > _COMPACT_AT:
            self._reasoning[:] = ["".join(self._reasoning)]

    async def finishing(self, chat: Chat, outcome: Outcome) -> None:
        await self._stop_writer()
        if not self._started:
            # Refused (an HTTP error) or the client left before the stream started: the user saw
            # no answer, so nothing of this request stays stored.
            await self._attempt_twice(lambda: self._store.abandon(self._claim), "undoing a refused chat")
            if self._restore:
                await self._attempt_twice(
                    lambda: self._store.restore(self._claim.conversation_id, self._restore),
                    "restoring what a refused regenerate removed",
                )
            return
        ending = self._ending(outcome)
        await self._attempt_twice(
            lambda: self._store.finish(self._claim, ending, self._model, self._provider), "storing an answer's end"
        )

    async def released(self, chat: Chat, outcome: Outcome) -> None:
        if not self._writer.done():  # finishing failed before it could stop the writer
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    def _ending(self, outcome: Outcome) -> Ending:
        text = "".join(self._text)
        reasoning = "".join(self._reasoning) or None
        if outcome.kind == "complete":
            return Ending(
                "complete",
                text,
                reasoning,
                finish_reason=outcome.finish_reason,
                usage=self._usage,
                tool_calls=self._tool_calls,
            )
        if outcome.kind == "error" and outcome.error is not None:
            error = outcome.error
            return Ending("error", text, reasoning, error_code=error.code, error_message=error.message)
        return Ending("interrupted", text, reasoning)  # cancelled, shutdown, client gone

    async def _attempt_twice(self, write: Callable[[], Awaitable[None]], what: str) -> None:
        for attempt in (1, 2):
            try:
                await write()
                return
            except StorageUnavailable as exc:
                if attempt == 2:
                    logger.error("%s failed twice; it is not stored: %s", what, exc.message)
                    return
                logger.warning("%s failed; retrying once: %s", what, exc.message)
                await asyncio.sleep(_RETRY_PAUSE_SECONDS)

    async def _stop_writer(self) -> None:
        # The writer finishes the write it is in (a cancelled write could leave a connection half-used).
        if self._first_write is not None:
            self._first_write.cancel()
        self._stopping = True
        self._wake.set()
        with contextlib.suppress(Exception):
            await self._writer

    async def _write_while_streaming(self) -> None:
        period = self._store.settings.checkpoint_seconds
        inserted = False
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                if self._started and not inserted:
                    await self._store.insert_answer(self._claim, self._model, self._provider)
                    inserted = True
                    continue
                await self._checkpoint(inserted)
            except StorageUnavailable as exc:
                if not self._failed:  # once per answer: a database that is down is not news every period
                    self._failed = True
                    logger.warning("an answer's checkpoint could not be stored (the stream goes on): %s", exc.message)
            except Exception:
                logger.exception("an answer's checkpoint failed (the stream goes on)")

    async def _checkpoint(self, inserted: bool) -> None:
        text = reasoning = None
        if inserted:
            if len(self._text) > 1:  # keep each checkpoint's join cheap: one piece so far
                self._text[:] = ["".join(self._text)]
            if len(self._reasoning) > 1:
                self._reasoning[:] = ["".join(self._reasoning)]
            current = (self._text[0] if self._text else "", self._reasoning[0] if self._reasoning else "")
            if (len(current[0]), len(current[1])) != self._saved:
                text, reasoning = current
        await self._store.checkpoint(self._claim, text, reasoning, answer=inserted)
        if text is not None and reasoning is not None:
            self._saved = (len(text), len(reasoning))
