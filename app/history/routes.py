"""``/conversations``: the principal's stored conversations — list, read, retitle, delete."""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from litestar import Controller, Request, Response, delete, get, patch
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody, Parameter, SkipValidation

from app.errors import InvalidRequest, NotFound
from app.history.cursor import Position, decode_cursor, encode_cursor
from app.history.feature import PERSISTENCE_OFF, conversation_uuid
from app.history.models import Conversation, Message
from app.history.schemas import (
    ConversationDetail,
    ConversationPage,
    ConversationSummary,
    MessageError,
    StoredMessage,
    TitleUpdate,
    rfc3339,
)
from app.history.store import HistoryStore
from app.openapi import problem_responses
from app.principal import principal_of

__all__ = ("ConversationController", "provide_history")

_TITLE_MAX: Final = 200


def provide_history(state: State) -> HistoryStore:
    """The app's conversation store.

    Raises:
        NotFound: persistence is off.
    """
    store: HistoryStore | None = state.get("history")
    if store is None:
        raise NotFound(PERSISTENCE_OFF)
    return store


def _summary(conversation: Conversation) -> ConversationSummary:
    return ConversationSummary(
        id=str(conversation.id),
        title=conversation.title,
        created_at=rfc3339(conversation.created_at),
        updated_at=rfc3339(conversation.updated_at),
        message_count=conversation.message_count,
    )


def _message(message: Message, status: str | None) -> StoredMessage:
    unset = msgspec.UNSET
    error = (
        MessageError(code=message.error_code, message=message.error_message or "")
        if message.error_code is not None
        else unset
    )
    return StoredMessage(
        id=str(message.id),
        role=message.role,
        content=message.content,
        created_at=rfc3339(message.created_at),
        status=status if status is not None else unset,
        reasoning=message.reasoning if message.reasoning is not None else unset,
        finish_reason=message.finish_reason if message.finish_reason is not None else unset,
        error=error,
        usage=message.usage if message.usage is not None else unset,
        model=message.model if message.model is not None else unset,
        provider=message.provider if message.provider is not None else unset,
        tool_calls=message.tool_calls if message.tool_calls is not None else unset,
        tool_call_id=message.tool_call_id if message.tool_call_id is not None else unset,
    )


def _title(data: Any) -> str:
    try:
        update = msgspec.convert(data, TitleUpdate, strict=True)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f'invalid request body: {exc} (send {{"title": "…"}})') from None
    title = update.title.strip()
    if not 1 <= len(title) <= _TITLE_MAX:
        raise InvalidRequest(f"title must be 1 to {_TITLE_MAX} characters after trimming (got {len(title)})")
    return title


class ConversationController(Controller):
    """The principal's stored conversations (CONTRACT §6)."""

    path = "/conversations"
    tags = ["conversations"]  # noqa: RUF012 (Litestar reads this class attribute as given)
    dependencies = {"history": Provide(provide_history, sync_to_thread=False)}  # noqa: RUF012

    @get(
        "/",
        operation_id="listConversations",
        summary="List conversations, most recently updated first",
        status_code=200,
        responses=problem_responses(400, 404, 500, 503),
    )
    async def list_conversations(
        self,
        request: Request[Any, Any, Any],
        history: NamedDependency[SkipValidation[HistoryStore]],
        limit: FromQuery[Annotated[int, Parameter(ge=1, le=100, description="Page size, 1 to 100.")]] = 20,
        cursor: FromQuery[Annotated[str | None, Parameter(description="The next_cursor of the previous page.")]] = None,
    ) -> ConversationPage:
        after: Position | None = decode_cursor(cursor) if cursor is not None else None
        rows, more = await history.page(principal_of(request).name, limit, after)
        next_cursor = encode_cursor(Position(rows[-1].updated_at, rows[-1].id)) if more and rows else None
        return ConversationPage(data=[_summary(row) for row in rows], next_cursor=next_cursor)

    @get(
        "/{conversation_id:str}",
        operation_id="getConversation",
        summary="A conversation with its messages, oldest first",
        status_code=200,
        responses=problem_responses(404, 500, 503),
    )
    async def get_conversation(
        self,
        request: Request[Any, Any, Any],
        history: NamedDependency[SkipValidation[HistoryStore]],
        conversation_id: FromPath[str],
    ) -> ConversationDetail:
        conversation, messages = await history.messages(principal_of(request).name, conversation_uuid(conversation_id))
        return ConversationDetail(
            id=str(conversation.id),
            title=conversation.title,
            created_at=rfc3339(conversation.created_at),
            updated_at=rfc3339(conversation.updated_at),
            messages=[_message(message, status) for message, status in messages],
        )

    @patch(
        "/{conversation_id:str}",
        operation_id="updateConversation",
        summary="Retitle a conversation",
        status_code=200,
        responses=problem_responses(400, 404, 500, 503),
    )
    async def update_conversation(
        self,
        request: Request[Any, Any, Any],
        history: NamedDependency[SkipValidation[HistoryStore]],
        conversation_id: FromPath[str],
        data: JSONBody[SkipValidation[TitleUpdate]],
    ) -> ConversationSummary:
        # SkipValidation hands over the decoded JSON: validated strictly here, into one clear 400.
        title = _title(data)
        identifier = conversation_uuid(conversation_id)
        return _summary(await history.retitle(principal_of(request).name, identifier, title))

    @delete(
        "/{conversation_id:str}",
        operation_id="deleteConversation",
        summary="Delete a conversation and its messages",
        status_code=204,
        responses=problem_responses(404, 409, 500, 503),
    )
    async def delete_conversation(
        self,
        request: Request[Any, Any, Any],
        history: NamedDependency[SkipValidation[HistoryStore]],
        conversation_id: FromPath[str],
    ) -> Response[None]:
        await history.delete(principal_of(request).name, conversation_uuid(conversation_id))
        return Response(None, status_code=204)
