"""Re-attaching to an answer that is streaming, and stopping one (CONTRACT §13).

``GET /conversations/{id}/stream`` replays the NDJSON lines sent so far and follows live;
``POST /conversations/{id}/stop`` stops the answer for real (the SDK's Stop only disconnects,
which with resume on only detaches). ``GET /api/chat/{id}/stream`` lives with ``/api/chat``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, SkipValidation
from litestar.response import Stream

from app.chat import ChatPipeline
from app.errors import NotFound
from app.history.feature import conversation_uuid
from app.history.routes import provide_history
from app.history.store import HistoryStore
from app.openapi import problem_responses
from app.principal import principal_of
from app.streams.live import LiveAnswer, LiveAnswers
from app.streams.redis import RedisStreams
from app.transports.ndjson import NDJSON_MEDIA_TYPE, STREAM_HEADERS, encode_batch
from providers.events import ChatEvent

__all__ = ("StreamsController", "find_answer", "follow_response", "live_answers")

#: How long ``/stop`` waits for the stopped answer's final write before it answers.
_STOP_WAIT_SECONDS: Final = 5.0


def live_answers(state: State) -> LiveAnswers | None:
    """This process's live answers; ``None`` when ``streams.resume`` is off."""
    answers: LiveAnswers | None = state.get("live_answers")
    return answers


async def find_answer(state: State, owner: str, conversation_id: str) -> AsyncIterator[Sequence[ChatEvent]] | None:
    """The batches of ``owner``'s answer streaming on a conversation — this process's, else another replica's."""
    answers = live_answers(state)
    if answers is None:
        return None
    answer: LiveAnswer | None = answers.of_conversation(owner, conversation_id)
    if answer is not None:
        return answer.follow()
    redis: RedisStreams | None = state.get("redis_streams")
    if redis is None:
        return None
    return await redis.follow(owner, conversation_id)


def follow_response(
    batches: AsyncIterator[Sequence[ChatEvent]],
    encode: Callable[[Sequence[ChatEvent]], bytes],
    media_type: str,
    headers: dict[str, str],
) -> Stream:
    """What was sent so far as one write, then each batch as it comes, until the terminal event."""

    async def body() -> AsyncIterator[bytes]:
        async for batch in batches:
            yield encode(batch)

    return Stream(body(), media_type=media_type, headers=headers, status_code=200)


class StreamsController(Controller):
    """Resume and stop the answer a stored conversation is streaming."""

    path = "/conversations"
    tags = ["conversations"]  # noqa: RUF012 (Litestar reads this class attribute as given)
    dependencies = {"history": Provide(provide_history, sync_to_thread=False)}  # noqa: RUF012

    @get(
        "/{conversation_id:str}/stream",
        operation_id="resumeConversationStream",
        summary="Re-attach to the answer streaming on a conversation (NDJSON, replay then live)",
        description="204 when the conversation is not streaming (or streams.resume is off).",
        responses={
            200: ResponseSpec(
                data_container=str,
                media_type=NDJSON_MEDIA_TYPE,
                description="The NDJSON lines of POST /chat: those sent so far, then the rest as they come.",
            ),
            204: ResponseSpec(data_container=None, description="Nothing is streaming on this conversation."),
            **problem_responses(404, 500, 503),
        },
        status_code=200,
    )
    async def resume(
        self,
        request: Request[Any, Any, Any],
        state: State,
        history: NamedDependency[SkipValidation[HistoryStore]],
        conversation_id: FromPath[str],
    ) -> Response[None] | Stream:
        owner = principal_of(request).name
        identifier = conversation_uuid(conversation_id)
        batches = await find_answer(state, owner, str(identifier))
        if batches is None:
            if not await history.owns(owner, identifier):
                raise NotFound("no such conversation")
            return Response(None, status_code=204)
        return follow_response(batches, encode_batch, NDJSON_MEDIA_TYPE, STREAM_HEADERS)

    @post(
        "/{conversation_id:str}/stop",
        operation_id="stopConversationStream",
        summary="Stop the answer streaming on a conversation",
        description="The answer ends with done/cancelled for its stream and every reader, and is stored"
        " interrupted; 200 once that is done, 204 when nothing was streaming.",
        responses={
            204: ResponseSpec(data_container=None, description="Nothing is streaming on this conversation."),
            **problem_responses(404, 500, 503),
        },
        status_code=200,
    )
    async def stop(
        self,
        request: Request[Any, Any, Any],
        state: State,
        pipeline: NamedDependency[SkipValidation[ChatPipeline]],
        history: NamedDependency[SkipValidation[HistoryStore]],
        conversation_id: FromPath[str],
    ) -> Response[dict[str, Any]] | Response[None]:
        owner = principal_of(request).name
        identifier = conversation_uuid(conversation_id)
        if not await history.owns(owner, identifier):
            raise NotFound("no such conversation")
        run = pipeline.stop_conversation(owner, str(identifier))
        if run is None:
            redis: RedisStreams | None = state.get("redis_streams")
            if redis is not None and await redis.request_stop(owner, str(identifier)):  # another replica's
                return Response({"stopped": True, "conversation_id": str(identifier)}, status_code=200)
            return Response(None, status_code=204)
        try:
            async with asyncio.timeout(_STOP_WAIT_SECONDS):
                await run.wait_ended()
        except TimeoutError:
            pass  # stopped; its final write is late, and lands on its own
        return Response({"stopped": True, "conversation_id": str(identifier)}, status_code=200)
