"""``/api/chat``: the AI SDK's ``useChat`` against the service unchanged (CONTRACT §13).

``POST /api/chat`` runs the one chat pipeline, as ``POST /chat`` does; only the request's shape
(:mod:`app.transports.ui_messages`) and the encoding (:mod:`app.transports.ui_stream`) differ.
"""

from __future__ import annotations

from typing import Any, Final

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, SkipValidation
from litestar.response import Stream

from app.auth import ADDRESS_CHECKED_ON_ADMISSION
from app.chat import ChatPipeline
from app.errors import NotFound
from app.history.feature import PERSISTENCE_OFF
from app.history.store import HistoryStore
from app.openapi import problem_responses
from app.principal import client_address, principal_of
from app.streams.routes import find_answer, follow_response
from app.transports.run_body import CLIENT_CLOSED_REQUEST, RunStream, disconnected
from app.transports.ui_messages import CHAT_ID, UIChatBody, chat_id_of, chat_request_of, ui_messages_of
from app.transports.ui_stream import UI_STREAM_HEADERS, UIStreamEncoder

__all__ = ("UIChatController",)

EVENT_STREAM: Final = "text/event-stream"
_STREAM_DOC = """The AI SDK's UI message stream (header `x-vercel-ai-ui-message-stream: v1`): one
`data: <JSON part>` event per part — `start` (messageId, messageMetadata {model, provider,
conversation_id}), `start-step`, `reasoning-start`/`-delta`/`-end`, `text-start`/`-delta`/`-end`,
`tool-input-start`/`-delta`/`-available`/`-error` (dynamic), then `finish-step` and `finish`
(finishReason, messageMetadata.usage); a failure mid-stream is `data-error` + `error` +
`finish-step` + `finish` (finishReason "error"). `data: [DONE]` is last."""


class UIChatController(Controller):
    """The AI SDK's chat transport (``useChat`` from ``@ai-sdk/react``)."""

    path = "/api/chat"
    tags = ["useChat"]  # noqa: RUF012 (Litestar reads this class attribute as given)

    @post(
        "/",
        status_code=200,
        operation_id="uiChat",
        summary="Stream an answer as the AI SDK's UI message stream",
        description="The body of `DefaultChatTransport` (id, messages, trigger, messageId) plus our optional"
        " fields (model, system, temperature, top_p, max_tokens, tools, tool_choice). With history on, the"
        " chat id names a conversation of the caller (created on first use) and only the last message is new.",
        responses={
            200: ResponseSpec(data_container=str, media_type=EVENT_STREAM, description=_STREAM_DOC),
            **problem_responses(400, 401, 404, 409, 413, 429, 500, 502, 503, 504),
        },
        opt={ADDRESS_CHECKED_ON_ADMISSION: True},
    )
    async def chat(
        self,
        request: Request[Any, Any, Any],
        state: State,
        pipeline: NamedDependency[SkipValidation[ChatPipeline]],
        data: JSONBody[SkipValidation[UIChatBody]],
    ) -> RunStream | Response[None]:
        # SkipValidation hands over the decoded JSON: validated strictly here, into one clear 400.
        persistent = state.get("history") is not None
        chat_request, external = chat_request_of(data, pipeline.limits, persistent=persistent)
        plan = await pipeline.plan_request(chat_request, principal_of(request), client_address(request), external)
        run = await pipeline.open(plan, until_gone=lambda: disconnected(request.receive))
        if run is None:
            return Response(None, status_code=CLIENT_CLOSED_REQUEST)
        return RunStream(run, UIStreamEncoder().encode, EVENT_STREAM, UI_STREAM_HEADERS)

    @get(
        "/{chat_id:str}/stream",
        status_code=200,
        operation_id="uiChatResume",
        summary="Re-attach to the chat's streaming answer (the transport's reconnect URL)",
        description="Replays the UI message stream sent so far, then follows live. 204 whenever none of the"
        " caller's answers streams under this chat id (never used, finished, resume off, persistence off).",
        responses={
            200: ResponseSpec(data_container=str, media_type=EVENT_STREAM, description=_STREAM_DOC),
            204: ResponseSpec(data_container=None, description="Nothing of the caller streams under this id."),
        },
    )
    async def resume(
        self, request: Request[Any, Any, Any], state: State, chat_id: FromPath[str]
    ) -> Response[None] | Stream:
        if not CHAT_ID.fullmatch(chat_id):
            return Response(None, status_code=204)
        owner = principal_of(request).name
        store: HistoryStore | None = state.get("history")
        batches = None
        if store is not None and state.get("live_answers") is not None:
            # The chat id names a conversation; whatever streams on it (through /api/chat or /chat) is found there.
            conversation = await store.find_external(owner, chat_id)
            if conversation is not None:
                batches = await find_answer(state, owner, str(conversation))
        if batches is None:
            return Response(None, status_code=204)
        return follow_response(batches, UIStreamEncoder().encode, EVENT_STREAM, UI_STREAM_HEADERS)

    @get(
        "/{chat_id:str}/messages",
        status_code=200,
        operation_id="uiChatMessages",
        summary="A stored chat as the AI SDK's UIMessage list",
        description="For `useChat({ messages })`; the chat id is the SDK's, not the conversation's UUID.",
        responses=problem_responses(404, 500, 503),
    )
    async def messages(self, request: Request[Any, Any, Any], state: State, chat_id: FromPath[str]) -> list[Any]:
        store: HistoryStore | None = state.get("history")
        if store is None:
            raise NotFound(f"no such chat: {PERSISTENCE_OFF}")
        owner = principal_of(request).name
        conversation = await store.find_external(owner, chat_id_of(chat_id))
        if conversation is None:
            raise NotFound("no such chat")
        _, messages = await store.messages(owner, conversation)
        return ui_messages_of(messages, str(conversation))
