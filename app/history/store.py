"""Every read and write of the conversation store, each decided by the database itself.

The claim on a conversation (one answer streams at a time, on any number of processes) is one
conditional ``UPDATE``: it succeeds only while no answer holds the conversation or the one that
does has a stale heartbeat (the database's clock, three checkpoint periods). A process that dies
mid-answer therefore blocks its conversation for at most three periods, and its message reads as
``interrupted`` with the text of its last checkpoint.

Reads for the routes go through advanced-alchemy repositories. The chat path uses Core
statements built once, a handful per answer and none per token; on PostgreSQL a chat's
admission (claim, history, the user's turn) is one statement, one round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import (
    CursorResult,
    Select,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.errors import Conflict, NotFound, StorageUnavailable
from app.history.clock import db_now, db_now_minus
from app.history.cursor import Position
from app.history.cut import cut_history
from app.history.database import TIMEOUT_SECONDS, Database, SchemaOutOfDate, failed_storage, unavailable
from app.history.models import Conversation, Message
from app.sections import HistorySettings

__all__ = ("Claim", "ConversationRepository", "Ending", "HistoryStore", "StoredTurn")

_conversations: Final = cast("Table", Conversation.__table__)
_messages: Final = cast("Table", Message.__table__)
# The chat path's statements, built once (per chat only their parameters change).
_cc, _mc = _conversations.c, _messages.c
_NEW_CONVERSATION: Final = insert(_conversations).values(
    created_at=db_now(), updated_at=db_now(), heartbeat_at=db_now()
)
_INSERT_TURN: Final = insert(_messages).values(created_at=db_now())
_INSERT_ANSWER: Final = insert(_messages).values(created_at=db_now(), heartbeat_at=db_now())
_INSERT_ENDED_ANSWER: Final = insert(_messages).values(created_at=db_now())
_HELD: Final = and_(_cc.id == bindparam("held_conversation"), _cc.streaming_message_id == bindparam("held_by"))
_ANSWER_ADDED: Final = (
    update(_conversations)
    .where(_HELD)
    .values(message_count=_cc.message_count + 1, updated_at=db_now(), heartbeat_at=db_now())
)
_ENDED_ANSWER_ADDED: Final = (
    update(_conversations)
    .where(_HELD)
    .values(message_count=_cc.message_count + 1, updated_at=db_now(), streaming_message_id=None, heartbeat_at=None)
)
_BEAT: Final = update(_conversations).where(_HELD).values(heartbeat_at=db_now())
_RELEASE: Final = update(_conversations).where(_HELD).values(streaming_message_id=None, heartbeat_at=None)
_STREAMING_ANSWER: Final = and_(_mc.id == bindparam("answer"), _mc.status == "streaming")
_CHECKPOINT_BEAT: Final = update(_messages).where(_STREAMING_ANSWER).values(heartbeat_at=db_now())
_CHECKPOINT_TEXT: Final = (
    update(_messages)
    .where(_STREAMING_ANSWER)
    .values(heartbeat_at=db_now(), content=bindparam("text"), reasoning=bindparam("thoughts"))
)
_FINISH: Final = (
    update(_messages)
    .where(_mc.id == bindparam("answer"))
    .values(
        content=bindparam("text"),
        reasoning=bindparam("thoughts"),
        status=bindparam("final_status"),
        finish_reason=bindparam("final_reason"),
        usage=bindparam("final_usage", type_=_mc.usage.type),
        error_code=bindparam("final_code"),
        error_message=bindparam("final_message"),
        tool_calls=bindparam("final_tool_calls", type_=_mc.tool_calls.type),
        heartbeat_at=None,
    )
)
# PostgreSQL: each write of an answer in one statement (data-modifying CTEs), one round trip.
_PG_ANSWER_ROW: Final = (
    insert(_messages)
    .values(
        id=bindparam("answer"),
        conversation_id=bindparam("held_conversation"),
        position=bindparam("answer_position"),
        role="assistant",
        content="",
        status="streaming",
        model=bindparam("answer_model"),
        provider=bindparam("answer_provider"),
        created_at=db_now(),
        heartbeat_at=db_now(),
    )
    .returning(_mc.id)
    .cte("answer_row")
)
_PG_INSERT_ANSWER: Final = _ANSWER_ADDED.add_cte(_PG_ANSWER_ROW)
_PG_CHECKPOINT_BEAT: Final = _BEAT.add_cte(_CHECKPOINT_BEAT.returning(_mc.id).cte("beat"))
_PG_CHECKPOINT_TEXT: Final = _BEAT.add_cte(_CHECKPOINT_TEXT.returning(_mc.id).cte("saved"))
_pg_finished = _FINISH.returning(_mc.id).cte("finished")
_PG_FINISH: Final = (
    select(select(_pg_finished.c.id).scalar_subquery().label("finished"))
    .add_cte(_pg_finished)
    .add_cte(
        update(_conversations)
        .where(_HELD, select(_pg_finished.c.id).exists())
        .values(streaming_message_id=None, heartbeat_at=None)
        .returning(_cc.id)
        .cte("released")
    )
)
#: A chat on a streaming conversation waits this long for that answer to end (stop, then resend).
CONFLICT_WAIT_SECONDS: Final = 1.0
_CONFLICT_POLL_SECONDS: Final = 0.05
#: An answer whose heartbeat is this many checkpoint periods old is dead (its process went away).
STALE_PERIODS: Final = 3
R = TypeVar("R")


class _Dropped(StorageUnavailable):
    """The database dropped a pooled connection (it restarted): worth one more try on a fresh one."""


class ConversationRepository(SQLAlchemyAsyncRepository[Conversation]):
    model_type = Conversation


@dataclass(frozen=True, slots=True)
class StoredTurn:
    """A stored turn as it goes upstream.

    ``tool_calls`` (an assistant turn's calls, in OpenAI's shape) and ``tool_call_id`` (the call a
    tool turn answers) are stored as they came, so a tool round trip can span requests.
    """

    role: str
    content: str
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """One answer's hold on its conversation, and the rows it stores."""

    conversation_id: uuid.UUID
    stored_ids: tuple[uuid.UUID, ...]
    """The request's own turns, stored before the upstream was called."""
    assistant_message_id: uuid.UUID
    assistant_position: int
    new: bool
    """The conversation was created by this request (a refusal deletes it whole)."""
    history: list[StoredTurn]


@dataclass(frozen=True, slots=True)
class Ending:
    """How a stored answer ended: its last text and status."""

    status: str
    content: str
    reasoning: str | None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class HistoryStore:
    """The conversation store of one app: claims, messages, checkpoints, and the routes' queries."""

    __slots__ = (
        "_autocommit",
        "_claim_statement",
        "_history_statement",
        "_pg_claim",
        "_pg_new",
        "_postgresql",
        "_sessions",
        "_stale",
        "_writer",
        "database",
        "settings",
    )

    def __init__(self, database: Database, settings: HistorySettings) -> None:
        self.database = database
        self.settings = settings
        self._sessions: Callable[[], AsyncSession] = database.config.create_session_maker()
        self._stale = settings.checkpoint_seconds * STALE_PERIODS
        # The chat path's statements, built once: per chat only their parameters change.
        c, m = _conversations.c, _messages.c
        self._claim_statement = (
            update(_conversations)
            .where(c.id == bindparam("claimed_id"), c.owner == bindparam("claimed_owner"), self._alive())
            .values(
                streaming_message_id=bindparam("answer_id"),
                heartbeat_at=db_now(),
                message_count=c.message_count + bindparam("added"),
            )
            .returning(c.message_count)
        )
        eligible = or_(
            m.status.is_(None),
            m.status.in_(("complete", "interrupted")),
            and_(m.status == "streaming", m.heartbeat_at < db_now_minus(self._stale)),  # its process died
        )
        self._history_statement = (
            select(m.role, m.content, m.tool_calls, m.tool_call_id)
            .where(m.conversation_id == bindparam("history_of"), eligible)
            .order_by(m.position.desc())
            .limit(settings.max_messages)
        )
        # PostgreSQL: a chat's admission in one statement, one round trip (data-modifying CTEs).
        self._postgresql = database.engine.dialect.name == "postgresql"
        self._autocommit = database.engine.execution_options(isolation_level="AUTOCOMMIT")
        # SQLite has one writer at a time: this process's transactions queue here, in order,
        # rather than in SQLite's busy handler (which sleeps and retries, and gives up at last).
        self._writer: contextlib.AbstractAsyncContextManager[Any] = (
            contextlib.nullcontext() if self._postgresql else asyncio.Lock()
        )
        turn_columns = ["id", "conversation_id", "position", "role", "content", "created_at"]
        new = (
            insert(_conversations)
            .values(
                id=bindparam("claimed_id"),
                owner=bindparam("claimed_owner"),
                title=bindparam("new_title"),
                created_at=db_now(),
                updated_at=db_now(),
                message_count=1,
                streaming_message_id=bindparam("answer_id"),
                heartbeat_at=db_now(),
                external_id=bindparam("new_external"),
            )
            .returning(c.id)
            .cte("new_conversation")
        )
        self._pg_new = insert(_messages).from_select(
            turn_columns,
            select(
                bindparam("turn_id", type_=m.id.type),
                new.c.id,
                literal(0),
                literal("user"),
                bindparam("turn_content", type_=m.content.type),
                db_now(),
            ),
        )
        claim = self._claim_statement.cte("claim")
        turn = (
            insert(_messages)
            .from_select(
                turn_columns,
                select(
                    bindparam("turn_id", type_=m.id.type),
                    bindparam("claimed_id", type_=c.id.type),
                    claim.c.message_count - 1,
                    literal("user"),
                    bindparam("turn_content", type_=m.content.type),
                    db_now(),
                ),
            )
            .returning(m.id)
            .cte("turn")
        )
        # The history is read in the statement's snapshot: without the turn it inserts.
        history = (
            select(m.role, m.content, m.tool_calls, m.tool_call_id, m.position)
            .where(m.conversation_id == bindparam("claimed_id"), eligible)
            .order_by(m.position.desc())
            .limit(settings.max_messages)
            .lateral("history")
        )
        self._pg_claim = (
            select(
                claim.c.message_count,
                history.c.role,
                history.c.content,
                history.c.tool_calls,
                history.c.tool_call_id,
            )
            .select_from(claim.outerjoin(history, true()))
            .add_cte(turn)
            .order_by(history.c.position.desc())
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One bounded transaction on a connection (the chat path's Core statements).

        Raises:
            StorageUnavailable: the database did not answer, or is not at the current schema.
        """
        async with self._guarded(), asyncio.timeout(TIMEOUT_SECONDS), self._writer, self.database.engine.begin() as db:
            yield db

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """One bounded transaction in an ORM session (the routes' repositories).

        Raises:
            StorageUnavailable: the database did not answer, or is not at the current schema.
        """
        async with self._guarded(), asyncio.timeout(TIMEOUT_SECONDS), self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def _guarded(self) -> AsyncIterator[None]:
        """A database that does not answer is ``storage_unavailable``; a bug stays a bug."""
        try:
            await self.database.ensure()
            yield
        except SchemaOutOfDate as exc:
            raise StorageUnavailable(f"conversation storage is unavailable: {exc}") from None
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise _Dropped(unavailable(exc).message) from None
            if not failed_storage(exc):
                raise
            raise unavailable(exc) from None
        except Exception as exc:
            if not failed_storage(exc):
                raise
            raise unavailable(exc) from None

    def _alive(self) -> Any:
        """No answer holds the conversation, or the one that does has stopped beating."""
        return or_(
            _conversations.c.streaming_message_id.is_(None),
            _conversations.c.heartbeat_at < db_now_minus(self._stale),
        )

    def _status(self) -> Any:
        """The status as readers see it: a ``streaming`` message with a stale heartbeat is ``interrupted``."""
        m = _messages.c
        dead = and_(m.status == "streaming", m.heartbeat_at < db_now_minus(self._stale))
        return case((dead, "interrupted"), else_=m.status)

    # ------------------------------------------------------------------ the chat path

    async def begin(
        self,
        owner: str,
        conversation_id: uuid.UUID | None,
        turns: Sequence[StoredTurn],
        title: str,
        external_id: str | None = None,
    ) -> Claim:
        """Claim a conversation (a new one when ``conversation_id`` is ``None``) and store the request's turns.

        A new conversation gets ``external_id`` (the client's own name for it) when given.

        Raises:
            NotFound: no such conversation of ``owner``.
            Conflict: another answer is streaming on it (and did not end within a second), or
                another request just created the conversation ``external_id`` names.
            StorageUnavailable: the database did not answer.
        """
        assistant_id = uuid.uuid4()
        stored = [(uuid.uuid4(), turn) for turn in turns]
        if conversation_id is None:
            try:
                return await self._retrying(lambda: self._begin_new(owner, title, stored, assistant_id, external_id))
            except IntegrityError:  # the unique (owner, external_id): a concurrent first message won
                raise Conflict(
                    "this chat is already streaming its first answer; wait for it to end and try again"
                ) from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONFLICT_WAIT_SECONDS
        while True:
            claim = await self._retrying(lambda: self._claim(owner, conversation_id, stored, assistant_id))
            if claim is not None:
                return claim
            # Not claimed: unknown, or streaming. A stream that was just stopped makes its final
            # write within moments, so a stop-then-resend waits for it rather than failing.
            if not await self._exists(owner, conversation_id):
                raise NotFound("no such conversation")
            if loop.time() >= deadline:
                raise Conflict(
                    "this conversation is already streaming an answer; wait for it to end (or stop it) and try again"
                )
            await asyncio.sleep(_CONFLICT_POLL_SECONDS)

    async def _retrying(self, attempt: Callable[[], Awaitable[R]]) -> R:
        # A pooled connection that the database dropped (a restart) fails once and is replaced.
        try:
            return await attempt()
        except _Dropped:
            return await attempt()

    async def _begin_new(
        self,
        owner: str,
        title: str,
        stored: list[tuple[uuid.UUID, StoredTurn]],
        assistant_id: uuid.UUID,
        external_id: str | None,
    ) -> Claim:
        conversation_id = uuid.uuid4()
        if self._postgresql and len(stored) == 1 and stored[0][1].role == "user":
            params = {
                "claimed_id": conversation_id,
                "claimed_owner": owner,
                "new_title": title,
                "answer_id": assistant_id,
                "turn_id": stored[0][0],
                "turn_content": stored[0][1].content,
                "new_external": external_id,
            }
            async with self._guarded(), asyncio.timeout(TIMEOUT_SECONDS), self._autocommit.connect() as db:
                await db.execute(self._pg_new, params)
            return Claim(conversation_id, (stored[0][0],), assistant_id, 1, new=True, history=[])
        row = {
            "id": conversation_id,
            "owner": owner,
            "title": title,
            "message_count": len(stored),
            "streaming_message_id": assistant_id,
            "external_id": external_id,
        }
        async with self.transaction() as db:
            await db.execute(_NEW_CONVERSATION, row)
            await _insert_turns(db, conversation_id, 0, stored)
        ids = tuple(identifier for identifier, _ in stored)
        return Claim(conversation_id, ids, assistant_id, len(stored), new=True, history=[])

    async def _claim(
        self,
        owner: str,
        conversation_id: uuid.UUID,
        stored: list[tuple[uuid.UUID, StoredTurn]],
        assistant_id: uuid.UUID,
    ) -> Claim | None:
        if self._postgresql and len(stored) == 1 and stored[0][1].role == "user":
            return await self._pg_claim_one(owner, conversation_id, stored[0], assistant_id)
        async with self.transaction() as db:
            # The claim comes first: on SQLite it takes the write lock before anything is read.
            claimed = await db.execute(
                self._claim_statement,
                {
                    "claimed_id": conversation_id,
                    "claimed_owner": owner,
                    "answer_id": assistant_id,
                    "added": len(stored),
                },
            )
            count = claimed.scalar_one_or_none()
            if count is None:
                return None
            history = await self._history(db, conversation_id)
            await _insert_turns(db, conversation_id, count - len(stored), stored)
        ids = tuple(identifier for identifier, _ in stored)
        return Claim(conversation_id, ids, assistant_id, count, new=False, history=history)

    async def _pg_claim_one(
        self, owner: str, conversation_id: uuid.UUID, stored: tuple[uuid.UUID, StoredTurn], assistant_id: uuid.UUID
    ) -> Claim | None:
        params = {
            "claimed_id": conversation_id,
            "claimed_owner": owner,
            "answer_id": assistant_id,
            "added": 1,
            "turn_id": stored[0],
            "turn_content": stored[1].content,
        }
        async with self._guarded(), asyncio.timeout(TIMEOUT_SECONDS), self._autocommit.connect() as db:
            rows = (await db.execute(self._pg_claim, params)).all()
        if not rows:
            return None
        count = rows[0][0]
        newest_first = [StoredTurn(*row[1:]) for row in rows if row[1] is not None]
        history = cut_history(newest_first, self.settings.max_messages, self.settings.max_chars)
        return Claim(conversation_id, (stored[0],), assistant_id, count, new=False, history=history)

    async def find_external(self, owner: str, external_id: str) -> uuid.UUID | None:
        """The conversation of ``owner`` that the client calls ``external_id``, if there is one."""
        c = _conversations.c
        async with self.transaction() as db:
            found = await db.execute(select(c.id).where(c.owner == owner, c.external_id == external_id))
            return found.scalar_one_or_none()

    async def rewind(self, owner: str, conversation_id: uuid.UUID, answer_id: uuid.UUID | None) -> list[dict[str, Any]]:
        """Remove the assistant message ``answer_id`` (else the last one) and what follows it.

        Returns:
            The removed rows, oldest first, for :meth:`restore` should the new answer fail before
            its stream starts (the user must not lose what they had for a regenerate that failed).

        Raises:
            Conflict: an answer is streaming on the conversation.
        """
        c, m = _conversations.c, _messages.c
        async with self.transaction() as db:
            answers = select(func.max(m.position)).where(m.conversation_id == conversation_id, m.role == "assistant")
            target = None
            if answer_id is not None:
                target = (await db.execute(answers.where(m.id == answer_id))).scalar_one_or_none()
            if target is None:  # not one of ours (a client-side id), or none named: the last answer
                target = (await db.execute(answers)).scalar_one_or_none()
            if target is None:
                return []
            # The conversation's row first: on SQLite that takes the write lock before the delete.
            released = await db.execute(
                update(_conversations)
                .where(c.id == conversation_id, c.owner == owner, self._alive())
                .values(message_count=target, updated_at=db_now(), streaming_message_id=None, heartbeat_at=None)
            )
            if not _rowcount(released):
                raise Conflict("this conversation is streaming an answer; wait for it to end (or stop it) first")
            following = and_(m.conversation_id == conversation_id, m.position >= target)
            removed = [dict(row._mapping) for row in await db.execute(select(_messages).where(following))]
            await db.execute(delete(_messages).where(following))
        return sorted(removed, key=lambda row: row["position"])

    async def restore(self, conversation_id: uuid.UUID, removed: Sequence[dict[str, Any]]) -> None:
        """Put back what :meth:`rewind` removed (its answer failed before streaming): the rows, and the count."""
        if not removed:
            return
        c = _conversations.c
        async with self.transaction() as db:
            await db.execute(insert(_messages), list(removed))
            await db.execute(
                update(_conversations)
                .where(c.id == conversation_id)
                .values(message_count=c.message_count + len(removed))
            )

    async def owns(self, owner: str, conversation_id: uuid.UUID) -> bool:
        """Whether ``owner`` has the conversation ``conversation_id``."""
        return await self._exists(owner, conversation_id)

    async def _exists(self, owner: str, conversation_id: uuid.UUID) -> bool:
        c = _conversations.c
        async with self.transaction() as db:
            found = await db.execute(select(c.id).where(c.id == conversation_id, c.owner == owner))
            return found.first() is not None

    async def history(self, owner: str, conversation_id: uuid.UUID) -> list[StoredTurn]:
        """The stored turns that go upstream for a chat that stores nothing (``store: false``).

        Raises:
            NotFound: no such conversation of ``owner``.
            StorageUnavailable: the database did not answer.
        """
        c = _conversations.c
        async with self.transaction() as db:
            found = await db.execute(select(c.id).where(c.id == conversation_id, c.owner == owner))
            if found.first() is None:
                raise NotFound("no such conversation")
            return await self._history(db, conversation_id)

    async def _history(self, db: AsyncConnection, conversation_id: uuid.UUID) -> list[StoredTurn]:
        rows = await db.execute(self._history_statement, {"history_of": conversation_id})
        newest_first = [StoredTurn(*row) for row in rows]
        return cut_history(newest_first, self.settings.max_messages, self.settings.max_chars)

    async def insert_answer(self, claim: Claim, model: str, provider: str) -> None:
        """Store the assistant's message as ``streaming`` (the stream has started)."""
        if self._postgresql:
            params = {
                **_held(claim),
                "answer": claim.assistant_message_id,
                "answer_position": claim.assistant_position,
                "answer_model": model,
                "answer_provider": provider,
            }
            await self._one(_PG_INSERT_ANSWER, params)
            return
        async with self.transaction() as db:
            await self._insert_answer(db, claim, model, provider, None)

    async def _one(self, statement: Any, params: dict[str, Any]) -> Any:
        """One statement in autocommit (its own transaction, a single round trip); a query's first value."""
        async with self._guarded(), asyncio.timeout(TIMEOUT_SECONDS), self._autocommit.connect() as db:
            result = await db.execute(statement, params)
            return result.scalar() if result.returns_rows else None

    async def _insert_answer(
        self, db: AsyncConnection, claim: Claim, model: str, provider: str, ending: Ending | None
    ) -> None:
        row: dict[str, Any] = {
            "id": claim.assistant_message_id,
            "conversation_id": claim.conversation_id,
            "position": claim.assistant_position,
            "role": "assistant",
            "model": model,
            "provider": provider,
        }
        if ending is None:
            row.update(content="", status="streaming")
            await db.execute(_INSERT_ANSWER, row)
            await db.execute(_ANSWER_ADDED, _held(claim))
            return
        row.update(
            content=ending.content,
            reasoning=ending.reasoning,
            status=ending.status,
            finish_reason=ending.finish_reason,
            usage=ending.usage,
            error_code=ending.error_code,
            error_message=ending.error_message,
            tool_calls=ending.tool_calls,
        )
        await db.execute(_INSERT_ENDED_ANSWER, row)
        await db.execute(_ENDED_ANSWER_ADDED, _held(claim))

    async def checkpoint(self, claim: Claim, text: str | None, reasoning: str | None, *, answer: bool) -> None:
        """The heartbeat, and the text so far (both ``None``: unchanged) once the answer's row exists."""
        beat_only = text is None and reasoning is None
        params: dict[str, Any] = {**_held(claim), "answer": claim.assistant_message_id}
        if not beat_only:
            params.update(text=text or "", thoughts=reasoning or None)
        if self._postgresql and answer:
            await self._one(_PG_CHECKPOINT_BEAT if beat_only else _PG_CHECKPOINT_TEXT, params)
            return
        async with self.transaction() as db:
            if answer:
                await db.execute(_CHECKPOINT_BEAT if beat_only else _CHECKPOINT_TEXT, params)
            await db.execute(_BEAT, params)

    async def finish(self, claim: Claim, ending: Ending, model: str, provider: str) -> None:
        """The answer's last write: its final text and status, and the conversation released."""
        params = {
            "answer": claim.assistant_message_id,
            "text": ending.content,
            "thoughts": ending.reasoning,
            "final_status": ending.status,
            "final_reason": ending.finish_reason,
            "final_usage": ending.usage,
            "final_code": ending.error_code,
            "final_message": ending.error_message,
            "final_tool_calls": ending.tool_calls,
        }
        if self._postgresql:
            if await self._one(_PG_FINISH, {**params, **_held(claim)}) is not None:
                return
            # The streaming row was never written (the database was away when the answer started).
            async with self.transaction() as db:
                await self._insert_answer(db, claim, model, provider, ending)
            return
        async with self.transaction() as db:
            if not _rowcount(await db.execute(_FINISH, params)):
                # The streaming row was never written (the database was away when the answer started).
                await self._insert_answer(db, claim, model, provider, ending)
                return
            await db.execute(_RELEASE, _held(claim))

    async def abandon(self, claim: Claim) -> None:
        """Undo what ``begin`` stored: the answer failed before its stream started."""
        c, m = _conversations.c, _messages.c
        async with self.transaction() as db:
            if claim.new:
                await db.execute(delete(_messages).where(m.conversation_id == claim.conversation_id))
                await db.execute(delete(_conversations).where(c.id == claim.conversation_id))
                return
            ids = [claim.assistant_message_id, *claim.stored_ids]
            removed = _rowcount(await db.execute(delete(_messages).where(m.id.in_(ids))))
            await db.execute(
                update(_conversations)
                .where(c.id == claim.conversation_id, c.streaming_message_id == claim.assistant_message_id)
                .values(message_count=c.message_count - removed, streaming_message_id=None, heartbeat_at=None)
            )

    # ------------------------------------------------------------------ the routes

    async def page(self, owner: str, limit: int, after: Position | None) -> tuple[list[Conversation], bool]:
        """Up to ``limit`` of ``owner``'s conversations after ``after``, newest first; and whether more follow."""
        c = Conversation
        statement: Select[tuple[Conversation]] = select(c).where(c.owner == owner)
        if after is not None:
            last = tuple_(literal(after.updated_at, c.updated_at.type), literal(after.id, c.id.type))
            statement = statement.where(tuple_(c.updated_at, c.id) < last)
        statement = statement.order_by(c.updated_at.desc(), c.id.desc()).limit(limit + 1)
        async with self.session() as session:
            rows = list(await ConversationRepository(session=session).get_many(statement=statement))
        return rows[:limit], len(rows) > limit

    async def messages(
        self, owner: str, conversation_id: uuid.UUID
    ) -> tuple[Conversation, list[tuple[Message, str | None]]]:
        """One conversation of ``owner`` with its messages, oldest first, each with the status readers see.

        Raises:
            NotFound: no such conversation of ``owner``.
        """
        async with self.session() as session:
            found = await ConversationRepository(session=session).get_one_or_none(id=conversation_id, owner=owner)
            if found is None:
                raise NotFound("no such conversation")
            rows = await session.execute(
                select(Message, self._status())
                .where(Message.conversation_id == conversation_id)
                .order_by(Message.position)
            )
            return found, [(message, status) for message, status in rows.tuples()]

    async def retitle(self, owner: str, conversation_id: uuid.UUID, title: str) -> Conversation:
        """Give a conversation of ``owner`` a new title.

        Raises:
            NotFound: no such conversation of ``owner``.
        """
        c = _conversations.c
        async with self.session() as session:
            result = await session.execute(
                update(_conversations)
                .where(c.id == conversation_id, c.owner == owner)
                .values(title=title, updated_at=db_now())
            )
            if not _rowcount(result):
                raise NotFound("no such conversation")
            return await ConversationRepository(session=session).get_one(id=conversation_id)

    async def delete(self, owner: str, conversation_id: uuid.UUID) -> None:
        """Delete a conversation of ``owner`` and its messages.

        Raises:
            NotFound: no such conversation of ``owner``.
            Conflict: an answer is streaming on it.
        """
        c, m = _conversations.c, _messages.c
        async with self.transaction() as db:
            result = await db.execute(
                delete(_conversations).where(c.id == conversation_id, c.owner == owner, self._alive())
            )
            if _rowcount(result):
                # Foreign keys cascade; this covers a SQLite connection opened without them.
                await db.execute(delete(_messages).where(m.conversation_id == conversation_id))
                return
        if await self._exists(owner, conversation_id):
            raise Conflict("this conversation is streaming an answer; stop it first, then delete it")
        raise NotFound("no such conversation")


async def _insert_turns(
    db: AsyncConnection, conversation_id: uuid.UUID, first: int, stored: list[tuple[uuid.UUID, StoredTurn]]
) -> None:
    rows = [
        {
            "id": identifier,
            "conversation_id": conversation_id,
            "position": first + n,
            "role": t.role,
            "content": t.content,
            "tool_calls": t.tool_calls,
            "tool_call_id": t.tool_call_id,
        }
        for n, (identifier, t) in enumerate(stored)
    ]
    if rows:
        await db.execute(_INSERT_TURN, rows)


def _held(claim: Claim) -> dict[str, uuid.UUID]:
    return {"held_conversation": claim.conversation_id, "held_by": claim.assistant_message_id}


def _rowcount(result: Any) -> int:
    return result.rowcount if isinstance(result, CursorResult) else 0
